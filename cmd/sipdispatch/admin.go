package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api"
)

// Admin commands talk to a running node's management API through
// api.Client (docs/operations.md, "Admin CLI").
const (
	defaultAPI   = "http://127.0.0.1:9060"
	envAPI       = "SIPDISPATCH_API"
	envToken     = "SIPDISPATCH_TOKEN"
	adminTimeout = 30 * time.Second // a reload commits through raft; allow for it
)

// adminFlags are the flags every admin command takes.
type adminFlags struct {
	fs        *flag.FlagSet
	api       string
	tokenFile string
	json      bool
}

func newAdminFlags(name, args string, stderr io.Writer) *adminFlags {
	a := newAPIFlags(name, args, stderr)
	a.fs.BoolVar(&a.json, "json", false, "print the raw JSON-RPC result")
	return a
}

// newAPIFlags declares -api and -token-file only, for a command that talks
// to a node but prints no single JSON-RPC result (top).
func newAPIFlags(name, args string, stderr io.Writer) *adminFlags {
	a := &adminFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	a.fs.SetOutput(stderr)
	a.fs.StringVar(&a.api, "api", "", "node API URL (default $"+envAPI+", else "+defaultAPI+")")
	a.fs.StringVar(&a.tokenFile, "token-file", "", "file holding the API token (default: $"+envToken+")")
	a.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: sipdispatch %s [flags] %s\n", name, args)
		a.fs.PrintDefaults()
	}
	return a
}

// parse parses args and checks the positional count is within [min, max].
func (a *adminFlags) parse(args []string, min, max int) error {
	if err := a.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("%w: help requested", errUsage)
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if n := a.fs.NArg(); n < min || n > max {
		a.fs.Usage()
		return fmt.Errorf("%w: wrong number of arguments", errUsage)
	}
	return nil
}

// client builds the API client: -api, else $SIPDISPATCH_API, else the
// default; the token from -token-file, else $SIPDISPATCH_TOKEN.
func (a *adminFlags) client() (*api.Client, error) {
	base := cmp.Or(a.api, os.Getenv(envAPI), defaultAPI)
	token := os.Getenv(envToken)
	if a.tokenFile != "" {
		t, err := api.ReadTokenFile(a.tokenFile)
		if err != nil {
			return nil, err
		}
		token = t
	}
	return api.NewClient(base, token, adminTimeout), nil
}

// callAndPrint runs one call; --json prints the result as the node sent it
// (indented, key order kept), else human prints it.
func (a *adminFlags) callAndPrint(stdout io.Writer, human func(json.RawMessage) error, method string, params ...any) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
	defer cancel()
	res, err := c.Call(ctx, method, params...)
	if err != nil {
		return err
	}
	if a.json || human == nil {
		var out bytes.Buffer
		if err := json.Indent(&out, res, "", "  "); err != nil {
			return fmt.Errorf("%s: %w", method, err)
		}
		out.WriteByte('\n')
		_, err := stdout.Write(out.Bytes())
		return err
	}
	return human(res)
}

// printMessage prints a string result ("Ok. Dispatcher state updated.").
func printMessage(stdout io.Writer) func(json.RawMessage) error {
	return func(res json.RawMessage) error {
		var msg string
		if err := json.Unmarshal(res, &msg); err != nil {
			return fmt.Errorf("unexpected result %s", res)
		}
		_, err := fmt.Fprintln(stdout, msg)
		return err
	}
}

func atoiArg(name, v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be an integer, got %q", errUsage, name, v)
	}
	return n, nil
}

// listResult is dispatcher.list's result, for the human table.
type listResult struct{ RECORDS []listRecord }

type listRecord struct {
	SET struct {
		ID      int
		TARGETS []struct{ DEST listDest }
	}
}

type listDest struct {
	URI      string
	FLAGS    string
	PRIORITY int
	ATTRS    *struct{ BODY string }
	LATENCY  *struct {
		AVG, EST float64
		MAX      int64
		TIMEOUT  int64
	}
	RUNTIME *struct{ DLGLOAD int }
}

// runList prints dispatcher.list: one row per destination, sets in
// ascending id order (--json keeps Kamailio's order).
func runList(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("list", "", stderr)
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	return a.callAndPrint(stdout, func(res json.RawMessage) error {
		var l listResult
		if err := json.Unmarshal(res, &l); err != nil {
			return fmt.Errorf("dispatcher.list: unexpected result: %w", err)
		}
		slices.SortStableFunc(l.RECORDS, func(x, y listRecord) int {
			return cmp.Compare(x.SET.ID, y.SET.ID)
		})
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SET\tURI\tFLAGS\tPRIORITY\tLOAD\tLATENCY avg/est/max ms (timeouts)\tATTRS")
		for _, r := range l.RECORDS {
			for _, t := range r.SET.TARGETS {
				d := t.DEST
				load, lat, attrs := "-", "-", ""
				if d.RUNTIME != nil {
					load = strconv.Itoa(d.RUNTIME.DLGLOAD)
				}
				if d.LATENCY != nil {
					lat = fmt.Sprintf("%.1f/%.1f/%d (%d)", d.LATENCY.AVG, d.LATENCY.EST, d.LATENCY.MAX, d.LATENCY.TIMEOUT)
				}
				if d.ATTRS != nil {
					attrs = d.ATTRS.BODY
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", r.SET.ID, d.URI, d.FLAGS, d.PRIORITY, load, lat, attrs)
			}
		}
		return tw.Flush()
	}, "dispatcher.list")
}

// runSetState is `set-state STATE SET URI|all`.
func runSetState(args []string, stdout, stderr io.Writer) error {
	return setState("set-state", "dispatcher.set_state", "STATE SET URI|all", args, stdout, stderr)
}

// runSetDUIDState is `set-duid-state STATE SET DUID`.
func runSetDUIDState(args []string, stdout, stderr io.Writer) error {
	return setState("set-duid-state", "dispatcher.set_duid_state", "STATE SET DUID", args, stdout, stderr)
}

func setState(name, method, usage string, args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags(name, usage+"\n  STATE: a (active), i (inactive), t (trying), d (disabled), optionally followed by p (probing)", stderr)
	if err := a.parse(args, 3, 3); err != nil {
		return err
	}
	set, err := atoiArg("SET", a.fs.Arg(1))
	if err != nil {
		return err
	}
	return a.callAndPrint(stdout, printMessage(stdout), method, a.fs.Arg(0), set, a.fs.Arg(2))
}

// runReload is `reload`.
func runReload(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("reload", "", stderr)
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	return a.callAndPrint(stdout, printMessage(stdout), "dispatcher.reload")
}

// runAdd is `add SET URI [FLAGS [PRIORITY [ATTRS]]]`.
func runAdd(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("add", "SET URI [FLAGS [PRIORITY [ATTRS]]]", stderr)
	if err := a.parse(args, 2, 5); err != nil {
		return err
	}
	set, err := atoiArg("SET", a.fs.Arg(0))
	if err != nil {
		return err
	}
	params := []any{set, a.fs.Arg(1)}
	for i, name := range []string{"FLAGS", "PRIORITY"} {
		if a.fs.NArg() > 2+i {
			n, err := atoiArg(name, a.fs.Arg(2+i))
			if err != nil {
				return err
			}
			params = append(params, n)
		}
	}
	if a.fs.NArg() == 5 {
		params = append(params, a.fs.Arg(4))
	}
	return a.callAndPrint(stdout, printMessage(stdout), "dispatcher.add", params...)
}

// runRemove is `remove SET URI`.
func runRemove(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("remove", "SET URI", stderr)
	if err := a.parse(args, 2, 2); err != nil {
		return err
	}
	set, err := atoiArg("SET", a.fs.Arg(0))
	if err != nil {
		return err
	}
	return a.callAndPrint(stdout, printMessage(stdout), "dispatcher.remove", set, a.fs.Arg(1))
}

// loadResult is dispatcher.load's result, for the human table.
type loadResult struct {
	SETS []struct {
		ID      int
		CALLS   int
		TARGETS []struct {
			URI     string
			DUID    *string
			FLAGS   string
			LOAD    int
			MAXLOAD int
		}
		ENTRIES []struct {
			CALLID    string
			URI       string
			AGE       int
			CONFIRMED bool
			EXPIRES   int
		}
	}
	PENDING int
}

// runLoad is `load [--set N] [--entries]`: call load per destination, and
// with --entries every call-load entry.
func runLoad(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("load", "", stderr)
	set := a.fs.Int("set", -1, "only this set")
	entries := a.fs.Bool("entries", false, "list every call-load entry (Call-ID, destination, age, confirmed)")
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	var params []any
	if *set >= 0 {
		params = append(params, *set)
	}
	if *entries {
		params = append(params, "entries")
	}
	return a.callAndPrint(stdout, func(res json.RawMessage) error {
		var l loadResult
		if err := json.Unmarshal(res, &l); err != nil {
			return fmt.Errorf("dispatcher.load: unexpected result: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SET\tURI\tDUID\tFLAGS\tLOAD\tMAXLOAD")
		for _, s := range l.SETS {
			for _, t := range s.TARGETS {
				duid, maxload := "-", "-"
				if t.DUID != nil {
					duid = *t.DUID
				}
				if t.MAXLOAD > 0 {
					maxload = strconv.Itoa(t.MAXLOAD)
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\n", s.ID, t.URI, duid, t.FLAGS, t.LOAD, maxload)
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, s := range l.SETS {
			fmt.Fprintf(stdout, "set %d: %d calls in progress\n", s.ID, s.CALLS)
		}
		fmt.Fprintf(stdout, "load commands not committed yet on this node: %d\n", l.PENDING)
		if !*entries {
			return nil
		}
		tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SET\tCALL-ID\tURI\tAGE\tCONFIRMED\tEXPIRES")
		for _, s := range l.SETS {
			for _, e := range s.ENTRIES {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%ds\t%v\t%ds\n", s.ID, e.CALLID, e.URI, e.AGE, e.CONFIRMED, e.EXPIRES)
			}
		}
		return tw.Flush()
	}, "dispatcher.load", params...)
}

// runMembers is `members`: the gossip members the node knows (cluster.members).
func runMembers(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("members", "", stderr)
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	return a.callAndPrint(stdout, func(res json.RawMessage) error {
		var r struct {
			MEMBERS []struct{ NAME, ADDR, STATE, RAFT_ID, RAFT_ADDR, SINCE string }
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return fmt.Errorf("unexpected result %s", res)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tGOSSIP ADDR\tSTATE\tRAFT ADDR\tSINCE")
		for _, m := range r.MEMBERS {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", m.NAME, m.ADDR, m.STATE, m.RAFT_ADDR, m.SINCE)
		}
		return tw.Flush()
	}, "cluster.members")
}

// runRaft is `raft`: the node's raft state, leader, term, indexes and peers (cluster.raft).
func runRaft(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("raft", "", stderr)
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	return a.callAndPrint(stdout, func(res json.RawMessage) error {
		var r struct {
			STATE, LEADER_ID, LEADER_ADDR                 string
			TERM, LAST_INDEX, COMMIT_INDEX, APPLIED_INDEX uint64
			PEERS                                         []struct{ ID, ADDR, SUFFRAGE string }
		}
		if err := json.Unmarshal(res, &r); err != nil {
			return fmt.Errorf("unexpected result %s", res)
		}
		fmt.Fprintf(stdout, "state %s, leader %s (%s), term %d, last index %d, commit index %d, applied %d\n",
			r.STATE, r.LEADER_ID, r.LEADER_ADDR, r.TERM, r.LAST_INDEX, r.COMMIT_INDEX, r.APPLIED_INDEX)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PEER\tADDR\tSUFFRAGE")
		for _, p := range r.PEERS {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.ID, p.ADDR, p.SUFFRAGE)
		}
		return tw.Flush()
	}, "cluster.raft")
}

// runLeave is `leave`: the node leaves the cluster for good and exits
// (cluster.leave). It returns once the leave has committed.
func runLeave(args []string, stdout, stderr io.Writer) error {
	a := newAdminFlags("leave", "", stderr)
	if err := a.parse(args, 0, 0); err != nil {
		return err
	}
	return a.callAndPrint(stdout, printMessage(stdout), "cluster.leave")
}
