// Package source owns the destinations that the set actors run: it reads
// them from the Kamailio list file or the dispatcher database table
// (docs/database.md), applies reload, runtime add and remove through the
// registry, and on a new leader commits the source's sets (Sync) or, on a
// cluster member, warns when its source differs from the replicated sets.
package source

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Sources owns what the set actors run: the destinations as loaded from the
// list file or database table, in source order, plus runtime additions and removals. Reload,
// add and remove each build the new sets first and hand them to the registry
// in one Replace, so a failure of any kind leaves the running sets as they were.
type Sources struct {
	cfg *dispatch.Config
	reg *actors.Registry // set once by SetRegistry, before any other call
	log *slog.Logger

	// Check, when set before use, refuses destinations the node cannot
	// serve (a socket attribute naming no listener: sip's
	// Config.CheckDestination) on reload and add, as Load's caller does at
	// start (Checked).
	Check func(*dispatch.Destination) error
	// reloaded is when the last reload, add or remove ran (reload_delta).
	reloaded time.Time

	// mu serialises changes; dests is guarded by it.
	mu    sync.Mutex
	dests []dispatch.Destination // source order: list lines or table rows, then runtime adds
}

// New returns the sources of cfg (list file or db_url), holding dests as
// Load read them; SetRegistry must be called before the other methods.
func New(cfg *dispatch.Config, dests []dispatch.Destination, log *slog.Logger) *Sources {
	return &Sources{cfg: cfg, dests: dests, log: log}
}

// SetRegistry gives the sources the registry they change. The registry is
// built after the sources (its sets come from the raft log), hence a setter.
func (s *Sources) SetRegistry(reg *actors.Registry) { s.reg = reg }

// Load reads the destination source: the database table when db_url is
// set, else the list file. With ds_load_mode 1 any bad line or row fails the
// load; with 0 bad ones are skipped with a warning each.
func Load(c *dispatch.Config, log *slog.Logger) ([]dispatch.Destination, error) {
	var (
		dests []dispatch.Destination
		err   error
	)
	if c.DBURL != "" {
		dests, err = LoadDB(context.Background(), c, log)
	} else {
		dests, err = ReadListFile(c.ListFile)
	}
	if err != nil {
		var le *dispatch.ListError
		if c.LoadMode != 0 || !errors.As(err, &le) {
			return nil, err
		}
		for _, l := range le.Lines {
			log.Warn("skipped bad destination (ds_load_mode 0)", "err", l.Error())
		}
	}
	return dests, nil
}

// Checked applies check to each destination. A failing one is reported as
// its source's file:line (or table:id); with ds_load_mode 1 the load fails,
// with 0 it is skipped with a warning, like a bad line.
func Checked(dests []dispatch.Destination, check func(*dispatch.Destination) error, loadMode int, log *slog.Logger) ([]dispatch.Destination, error) {
	if check == nil {
		return dests, nil
	}
	var bad dispatch.ListError
	kept := dests[:0:0]
	for i := range dests {
		err := check(&dests[i])
		if err == nil {
			kept = append(kept, dests[i])
			continue
		}
		le := dispatch.LineError{File: dests[i].Source, Reason: err.Error()}
		if j := strings.LastIndexByte(le.File, ':'); j >= 0 {
			if n, aerr := strconv.Atoi(le.File[j+1:]); aerr == nil {
				le.File, le.Line = le.File[:j], n
			}
		}
		bad.Lines = append(bad.Lines, le)
	}
	if len(bad.Lines) == 0 {
		return dests, nil
	}
	if loadMode != 0 {
		return nil, &bad
	}
	for _, l := range bad.Lines {
		log.Warn("skipped bad destination (ds_load_mode 0)", "err", l.Error())
	}
	return kept, nil
}

// rateLimit enforces reload_delta (s.mu held): it refuses a change less
// than that many seconds after the previous one, else records this one.
func (s *Sources) rateLimit(now time.Time) error {
	if s.cfg.ReloadDelta > 0 && !s.reloaded.IsZero() && now.Before(s.reloaded.Add(time.Duration(s.cfg.ReloadDelta)*time.Second)) {
		return dispatch.ErrOngoingReload
	}
	s.reloaded = now
	return nil
}

// ReadListFile reads a list file in line order; a *dispatch.ListError comes
// with the good lines.
func ReadListFile(name string) ([]dispatch.Destination, error) {
	fh, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return dispatch.ReadList(fh, name)
}

// Name names the destination source of c in messages: the list file, or
// the table and the database URL without its password.
func Name(c *dispatch.Config) string {
	if c.DBURL != "" {
		return dbSourceName(c)
	}
	return c.ListFile
}

// Reload re-reads the source and replaces the sets, keeping runtime state.
func (s *Sources) Reload(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.rateLimit(time.Now()); err != nil {
		return err
	}
	dests, err := Load(s.cfg, s.log)
	if err != nil {
		return err
	}
	if dests, err = Checked(dests, s.Check, s.cfg.LoadMode, s.log); err != nil {
		return err
	}
	if err := s.reg.Replace(ctx, dispatch.BuildSets(dests)); err != nil {
		return err
	}
	s.dests = dests
	s.log.Info("destinations reloaded", "destinations", len(dests))
	return nil
}

// Add inserts a destination at runtime (dispatcher.add), as if it were a new
// last line of the list. It is not written back to the file, and a reload
// drops it, as in Kamailio. In a cluster it applies to the committed sets, so
// additions through different nodes all survive.
func (s *Sources) Add(ctx context.Context, set int, uri string, flags dispatch.Flags, priority int, attrs string) error {
	d, err := dispatch.NewDestination(set, uri, flags, priority, attrs)
	if err != nil {
		return err
	}
	d.Source = "runtime"
	if s.Check != nil {
		if err := s.Check(&d); err != nil {
			return err
		}
	}
	if err := s.limitChange(); err != nil {
		return err
	}
	if err := s.reg.AddDest(ctx, d); err != nil {
		return err
	}
	s.log.Info("destination added", "set", set, "uri", uri)
	return nil
}

// Remove deletes every destination with uri from set (dispatcher.remove).
func (s *Sources) Remove(ctx context.Context, set int, uri string) error {
	if err := s.limitChange(); err != nil {
		return err
	}
	if err := s.reg.RemoveDest(ctx, set, uri); err != nil {
		return err
	}
	s.log.Info("destination removed", "set", set, "uri", uri)
	return nil
}

// limitChange applies reload_delta to a runtime add or remove, which
// Kamailio counts as reloads.
func (s *Sources) limitChange() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rateLimit(time.Now())
}

// Sync runs on a new leader, after everything committed before has been
// applied. If the replicated state holds no set (a brand-new cluster or data
// dir), it commits this node's source. Otherwise, with replace (a standalone
// node, whose source is the operator's truth at start), it commits the
// source as a reload when it differs from the committed sets, so that state
// and call load carry over by duid, else set+URI. It retries until done
// (true) or the leadership ends (false).
func (s *Sources) Sync(ctx context.Context, replace bool) bool {
	const retry = time.Second
	for {
		err := s.syncOnce(ctx, replace)
		if err == nil {
			return true
		}
		s.log.Warn("cluster: committing the source's sets failed; retrying", "err", err)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
	}
}

func (s *Sources) syncOnce(ctx context.Context, replace bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reg.IDs()) == 0 {
		if err := s.reg.Replace(ctx, dispatch.BuildSets(s.dests)); err != nil {
			return err
		}
		s.log.Info("cluster: committed the initial sets", "destinations", len(s.dests), "source", Name(s.cfg))
		return nil
	}
	if !replace {
		return nil
	}
	diff, err := s.sourceDiff(ctx)
	if err != nil {
		return err
	}
	if diff == 0 {
		s.log.Info("standalone: the committed sets match the source", "source", Name(s.cfg))
		return nil
	}
	if err := s.reg.Replace(ctx, dispatch.BuildSets(s.dests)); err != nil {
		return err
	}
	s.log.Info("standalone: the source changed since the sets were committed; committed it as a reload",
		"differences", diff, "destinations", len(s.dests), "source", Name(s.cfg))
	return nil
}

// RaftView is what WarnDrift reads of the raft node; *cluster.Node
// implements it.
type RaftView interface {
	Raft() (cluster.RaftStatus, error)
}

// WarnDrift runs on a cluster member: once the node has caught up
// with the leader, it compares its own source with the replicated sets and
// warns if they differ. It never replaces them: one node's file must not
// silently overwrite the cluster's state; the operator runs reload.
func (s *Sources) WarnDrift(node RaftView) {
	const poll, limit = 200 * time.Millisecond, 10 * time.Minute
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(poll) {
		st, err := node.Raft()
		if err != nil || st.State == "Shutdown" {
			return
		}
		if st.LeaderID == "" || st.CommitIndex == 0 || st.AppliedIndex < st.CommitIndex || len(s.reg.IDs()) == 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), diffTimeout)
		s.mu.Lock()
		diff, err := s.sourceDiff(ctx)
		s.mu.Unlock()
		cancel()
		switch {
		case err != nil:
			s.log.Warn("cluster: comparing the source with the replicated sets failed", "err", err)
		case diff > 0:
			s.log.Warn("cluster: this node's destination source differs from the replicated sets; the cluster's sets are kept. "+
				"Run `sipdispatch reload` on this node to commit its source", "differences", diff, "source", Name(s.cfg))
		}
		return
	}
}

// diffTimeout bounds how long a comparison with the committed sets waits
// for the set actors.
const diffTimeout = 10 * time.Second

// sourceDiff counts how many destinations differ between the committed sets
// and the source (s.mu held).
func (s *Sources) sourceDiff(ctx context.Context) (int, error) {
	st, err := s.reg.Status(ctx)
	if err != nil {
		return 0, fmt.Errorf("read the committed sets: %w", err)
	}
	return Diff(st, dispatch.BuildSets(s.dests)), nil
}

// Diff counts the destinations (set, URI, flags, priority and attributes
// as written) that are on one side only; a destination whose attributes
// changed counts twice (removed and added). Equal destinations in another
// order within a set count as one difference, as the order drives selection.
func Diff(committed []actors.SetStatus, source []dispatch.Set) int {
	type key struct {
		set      int
		uri      string
		flags    dispatch.Flags
		priority int
		attrs    string
	}
	balance := map[key]int{}
	var a, b []key
	for _, set := range committed {
		for _, d := range set.Dests {
			k := key{set.ID, d.URI, d.Flags, d.Priority, d.Attrs.Raw}
			a = append(a, k)
			balance[k]++
		}
	}
	source = slices.Clone(source)
	slices.SortStableFunc(source, func(x, y dispatch.Set) int { return cmp.Compare(x.ID, y.ID) })
	for _, set := range source {
		for _, d := range set.Dests {
			k := key{set.ID, d.URI, d.Flags, d.Priority, d.Attrs.Raw}
			b = append(b, k)
			balance[k]--
		}
	}
	diff := 0
	for _, v := range balance {
		diff += max(v, -v)
	}
	if diff == 0 && !slices.Equal(a, b) {
		diff = 1
	}
	return diff
}
