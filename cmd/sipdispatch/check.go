package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip"
)

// runHash prints Kamailio's dispatcher.hash for the values: the hash id and
// the slot it falls in among NSLOTS destinations.
func runHash(args []string, stdout, _ io.Writer) error {
	if len(args) < 2 || len(args) > 3 {
		return fmt.Errorf("%w: hash NSLOTS V1 [V2]", errUsage)
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 {
		return fmt.Errorf("%w: NSLOTS must be a positive integer, got %q", errUsage, args[0])
	}
	v2 := ""
	if len(args) == 3 {
		v2 = args[2]
	}
	h := dispatch.Hash(args[1], v2)
	fmt.Fprintf(stdout, "hashid: %d\nslot: %d\n", h, h%uint32(n))
	return nil
}

// runCheck validates a configuration file (-config) and the list file or
// database table it names, or one list file alone (-list; with -config it replaces list_file),
// and prints the sets in selection order and the routes. Every problem is
// reported, as file:line: reason where there is a line, and the exit code is 1.
func runCheck(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("check", flag.ContinueOnError)
	flags.SetOutput(stderr)
	config := flags.String("config", "", "configuration file (YAML) to check, with the list file it names")
	list := flags.String("list", "", "Kamailio-format list file to check")
	if err := flags.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if (*list == "" && *config == "") || flags.NArg() != 0 {
		return fmt.Errorf("%w: check [-config FILE] [-list FILE]", errUsage)
	}
	if *config == "" {
		sets, err := checkList(*list)
		printSets(stdout, sets)
		return err
	}
	c, err := loadConfig(*config)
	if err != nil {
		return err
	}
	if *list != "" {
		c.Dispatcher.ListFile = *list
		c.Dispatcher.DBURL = "" // -list checks that file, not the table
		delete(c.lines, "dispatcher.list_file")
	}
	for _, w := range c.Warnings() {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	printKamailioKeys(stdout, &c)
	var errs []error
	if err := c.Preflight(); err != nil {
		errs = append(errs, err)
	} else {
		fmt.Fprintf(stdout, "config %s: node %s, listen %s, proxy %s\n", *config, c.Node.Name, strings.Join(c.Listen, " "), c.Proxy.Mode)
	}
	var sets []dispatch.Set
	var lerr error
	if c.Dispatcher.DBURL != "" {
		if len(errs) == 0 {
			// The database notes absent columns of older table versions.
			var dests []dispatch.Destination
			dests, lerr = source.LoadDB(context.Background(), &c.Dispatcher.Config, slog.New(slog.NewTextHandler(stderr, nil)))
			sets = dispatch.BuildSets(dests)
		}
	} else {
		sets, lerr = checkList(c.Dispatcher.ListFile)
		var perr *fs.PathError
		if errors.As(lerr, &perr) {
			lerr = fmt.Errorf("%sdispatcher.list_file: %w", c.lineOf("dispatcher.list_file"), lerr)
		}
	}
	if lerr == nil && len(errs) == 0 {
		// What serve refuses at load: socket attributes naming no listener.
		var all []dispatch.Destination
		for _, s := range sets {
			all = append(all, s.Dests...)
		}
		var kept []dispatch.Destination
		kept, lerr = source.Checked(all, c.checkDestination, c.Dispatcher.LoadMode, slog.New(slog.NewTextHandler(stderr, nil)))
		if lerr == nil && len(kept) != len(all) {
			sets = dispatch.BuildSets(kept)
		}
	}
	if lerr != nil && c.Dispatcher.LoadMode == 0 && len(sets) > 0 {
		// ds_load_mode 0: serve skips bad lines and rows, so they do not fail the check.
		fmt.Fprintf(stderr, "warning: ds_load_mode 0 skips these:\n%v\n", lerr)
	} else if lerr != nil {
		errs = append(errs, lerr)
	}
	printSets(stdout, sets)
	if len(errs) == 0 {
		r, err := c.router(sets)
		if err != nil {
			return err
		}
		errs = append(errs, printRoutes(stdout, stderr, &c, r, sets)...)
	}
	return errors.Join(errs...)
}

// printKamailioKeys lists the dispatcher keys the file sets: those that
// configure sipdispatch and those accepted without effect (their warnings
// say why).
func printKamailioKeys(w io.Writer, c *fileConfig) {
	type key struct {
		name string
		line int
	}
	var mapped, ignored []key
	for p, l := range c.lines {
		k, ok := strings.CutPrefix(p, "dispatcher.")
		if !ok || strings.ContainsAny(k, ".[") || k == thresholdTypo || k == pingTimeoutAlias {
			continue
		}
		if ignoredParams[k] != "" || noopParams[k] || k == "force_dst" && c.Dispatcher.ForceDst != 0 {
			ignored = append(ignored, key{k, l})
		} else {
			mapped = append(mapped, key{k, l})
		}
	}
	for _, l := range []struct {
		what string
		keys []key
	}{{"mapped", mapped}, {"ignored (see the warnings)", ignored}} {
		if len(l.keys) == 0 {
			continue
		}
		slices.SortFunc(l.keys, func(a, b key) int { return a.line - b.line })
		names := make([]string, len(l.keys))
		for i, k := range l.keys {
			names[i] = k.name
		}
		fmt.Fprintf(w, "dispatcher keys %s: %s\n", l.what, strings.Join(names, " "))
	}
}

// checkList parses one list file; the error names every bad line.
func checkList(name string) ([]dispatch.Set, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return dispatch.ParseList(f, name)
}

// printRoutes lists the compiled routes, warns about an algorithm sipdispatch
// does not implement, and reports routes to a set the list does not have
// (Kamailio's ds_select_dst would fail on every such request).
func printRoutes(stdout, stderr io.Writer, c *fileConfig, r *sip.Router, sets []dispatch.Set) []error {
	var errs []error
	cfg := c.Routes
	known := map[int]bool{}
	for _, s := range sets {
		known[s.ID] = true
	}
	for i, rt := range r.Routes() {
		cond := ""
		if i < len(cfg) {
			cond = describeMatch(&cfg[i].Match)
		}
		if rt.Reply != nil {
			fmt.Fprintf(stdout, "route %d %s:%s reply %d %s\n", i, rt.Name, cond, rt.Reply.Code, rt.Reply.Reason)
			continue
		}
		d := rt.Dispatch
		mode := "dst"
		if d.Domain {
			mode = "domain"
		}
		fmt.Fprintf(stdout, "route %d %s:%s dispatch set %d alg %d (%s) mode %s", i, rt.Name, cond, d.Set, int(d.Alg), d.Alg, mode)
		if d.Limit > 0 {
			fmt.Fprintf(stdout, " limit %d", d.Limit)
		}
		if d.OnEmptyNext {
			fmt.Fprint(stdout, " on_empty next")
		}
		fmt.Fprintln(stdout)
		if !d.Alg.Known() {
			fmt.Fprintf(stderr, "warning: route %d %s: %s\n", i, rt.Name, unknownAlgWarning(d.Alg))
		}
		if len(sets) > 0 && !known[d.Set] {
			path := fmt.Sprintf("routes[%d].dispatch.set", i)
			errs = append(errs, fmt.Errorf("%sroutes[%d] %q: dispatch.set: %d: no such set in %s", c.lineOf(path), i, rt.Name, d.Set, c.sourceName()))
		}
	}
	return errs
}

// unknownAlgWarning says what a route with an algorithm sipdispatch does not
// implement does: it takes the first active destination, which is what
// Kamailio's ds_manage_routes does for a number it does not know either -
// but not for 64, Kamailio's round-robin with overload control.
func unknownAlgWarning(a dispatch.Algorithm) string {
	if a == dispatch.AlgOverload {
		return "algorithm 64 (Kamailio: round-robin with overload control, ocrate/ocidle/ocmax attributes) is not implemented in sipdispatch; the first active destination is used instead, unlike Kamailio"
	}
	return fmt.Sprintf("algorithm %d is not implemented; the first active destination is used, as Kamailio does for an algorithm number it does not know", int(a))
}

// describeMatch renders a route's conditions for `check`, " all" if none.
func describeMatch(m *sip.MatchConfig) string {
	var b strings.Builder
	if m.FromSet != nil {
		fmt.Fprintf(&b, " from_set=%s", m.FromSet)
		if m.FromSetMode != nil {
			fmt.Fprintf(&b, " from_set_mode=%d", *m.FromSetMode)
		}
	}
	if len(m.Methods) > 0 {
		fmt.Fprintf(&b, " methods=%s", strings.Join(m.Methods, ","))
	}
	for _, kv := range [][2]string{{"ruri_user", m.RURIUser}, {"ruri_domain", m.RURIDomain}, {"from_uri", m.FromURI}, {"to_uri", m.ToURI}, {"source", m.Source}} {
		if kv[1] != "" {
			fmt.Fprintf(&b, " %s=%s", kv[0], kv[1])
		}
	}
	if m.Header != nil {
		fmt.Fprintf(&b, " header %s=%s", m.Header.Name, m.Header.Regex)
	}
	if b.Len() == 0 {
		return " all"
	}
	return b.String()
}

func printSets(w io.Writer, sets []dispatch.Set) {
	for _, s := range sets {
		fmt.Fprintf(w, "set %d (%d destinations)\n", s.ID, len(s.Dests))
		for i, d := range s.Dests {
			fmt.Fprintf(w, "  %2d %-40s flags=%-2s priority=%d", i, d.URI, d.Flags.Letters(), d.Priority)
			if d.Attrs.Raw != "" {
				fmt.Fprintf(w, " attrs=%s", d.Attrs.Raw)
			}
			fmt.Fprintf(w, "  (%s)\n", d.Source)
		}
	}
}
