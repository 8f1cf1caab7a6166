package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// slowAddProposer holds every LoadAdd until gate is closed or the
// proposal's ctx ends; a LoadAdd that gave up is handed to late, so that a
// test can still commit it (an outcome a real cluster cannot rule out).
// Everything else goes straight to the log.
type slowAddProposer struct {
	*logProposer
	gate chan struct{}
	late chan dispatch.Command
	mu   sync.Mutex
	seen []dispatch.CommandKind // every Propose call, in call order
}

func (p *slowAddProposer) Propose(ctx context.Context, c dispatch.Command) error {
	p.mu.Lock()
	p.seen = append(p.seen, c.Kind)
	p.mu.Unlock()
	if c.Kind == dispatch.CmdLoadAdd {
		select {
		case <-p.gate:
		case <-ctx.Done():
			p.late <- c
			return ctx.Err()
		}
	}
	return p.logProposer.Propose(ctx, c)
}

func (p *slowAddProposer) calls() []dispatch.CommandKind {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

func newSlowAdd(t *testing.T, o Options) (*Registry, *slowAddProposer) {
	t.Helper()
	p := &slowAddProposer{logProposer: &logProposer{}, gate: make(chan struct{}), late: make(chan dispatch.Command, 16)}
	o.Proposer = p
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := newTestRegistry(t, threeGateways(), o)
	p.local = r
	return r, p
}

func logKinds(t *testing.T, log [][]byte) []dispatch.CommandKind {
	t.Helper()
	var out []dispatch.CommandKind
	for _, b := range log {
		c, err := dispatch.DecodeCommand(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c.Kind)
	}
	return out
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func calls(t *testing.T, r *Registry) (int, []int) {
	t.Helper()
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var loads []int
	for _, d := range st[0].Dests {
		loads = append(loads, d.State.Load)
	}
	return st[0].Calls, loads
}

// load_replication async: a fast call's confirm and BYE come while its
// LoadAdd is still being proposed. They are proposed only after it, so the
// log holds add, confirm, remove and no node keeps an entry.
func TestAsyncLoadCommandsWaitForTheirAdd(t *testing.T) {
	ctx := context.Background()
	r, p := newSlowAdd(t, Options{ProposeTimeout: time.Minute})
	sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("fast"), 0)
	if err != nil || sel.LoadCommand == nil {
		t.Fatalf("select: %v %+v", err, sel)
	}
	r.CommitLoadAsync(sel) // returns while the add is held
	if err := r.LoadConfirm(ctx, 1, "fast"); err != nil {
		t.Fatal(err)
	}
	if err := r.LoadRemove(ctx, -1, "fast"); err != nil {
		t.Fatal(err)
	}
	// The confirm and remove returned without proposing: they wait.
	waitUntil(t, "the LoadAdd proposal", func() bool { return len(p.calls()) == 1 })
	if got := p.calls(); !slices.Equal(got, []dispatch.CommandKind{dispatch.CmdLoadAdd}) {
		t.Fatalf("proposed before the add committed: %v", got)
	}
	// Meanwhile the pick is reserved: the next call goes elsewhere.
	next, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("other"), 0)
	if err != nil || next.Dests[0].URI == sel.Dests[0].URI {
		t.Fatalf("second pick %v %v: the reservation did not count", next.Dests, err)
	}
	close(p.gate)
	p.waitLog(t, 3)
	want := []dispatch.CommandKind{dispatch.CmdLoadAdd, dispatch.CmdLoadConfirm, dispatch.CmdLoadRemove}
	if got := logKinds(t, p.entries()); !slices.Equal(got, want) {
		t.Fatalf("log %v, want %v", got, want)
	}
	if n, loads := calls(t, r); n != 0 || slices.Max(loads) != 0 {
		t.Fatalf("after the BYE: %d calls, loads %v; want none", n, loads)
	}
	// A follower replaying the log ends the same.
	b, _ := newReplicated(t, threeGateways(), Options{})
	replay(t, b, p.entries())
	if n, _ := calls(t, b); n != 0 {
		t.Fatalf("follower keeps %d calls", n)
	}
}

// A LoadAdd whose proposal failed may still commit later. Its call's BYE,
// issued while it was in flight, is dropped (there was no entry to remove);
// when the add does commit, this node proposes the removal, so the end state
// is still empty. Both modes share this path.
func TestFailedLoadAddCommittingLateIsRemoved(t *testing.T) {
	for _, mode := range []string{LoadCommitSync, LoadCommitAsync} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			var failures sync.Map
			count := func(m string) { v, _ := failures.LoadOrStore(m, new(atomic.Int64)); v.(*atomic.Int64).Add(1) }
			failed := func(m string) int64 {
				v, ok := failures.Load(m)
				if !ok {
					return 0
				}
				return v.(*atomic.Int64).Load()
			}
			r, p := newSlowAdd(t, Options{ProposeTimeout: 50 * time.Millisecond, OnLoadCommitFailure: count})
			sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("lost"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if mode == LoadCommitSync {
				done := make(chan error, 1)
				cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
				defer cancel()
				go func() { done <- r.CommitLoad(cctx, sel) }()
				// A CANCEL while the commit waits.
				waitUntil(t, "the LoadAdd proposal", func() bool { return len(p.calls()) == 1 })
				if err := r.LoadRemove(ctx, 1, "lost"); err != nil {
					t.Fatal(err)
				}
				if err := <-done; !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("commit: %v, want the deadline", err)
				}
			} else {
				r.CommitLoadAsync(sel)
				if err := r.LoadRemove(ctx, -1, "lost"); err != nil {
					t.Fatal(err)
				}
			}
			waitUntil(t, "the failure count", func() bool { return failed(mode) == 1 })
			// A later BYE of the call costs no proposal either.
			if err := r.LoadRemove(ctx, -1, "lost"); err != nil {
				t.Fatal(err)
			}
			if got := p.calls(); !slices.Equal(got, []dispatch.CommandKind{dispatch.CmdLoadAdd}) {
				t.Fatalf("proposals %v: the remove of a failed add must be dropped", got)
			}
			// The reservation was dropped with the failure.
			again, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("again"), 0)
			if err != nil || again.Dests[0].URI != sel.Dests[0].URI {
				t.Fatalf("pick after the failure %v %v, want %s again", again.Dests, err, sel.Dests[0].URI)
			}
			if err := r.CommitLoad(ctx, Selection{}); err != nil { // nil LoadCommand: nothing, no count
				t.Fatal(err)
			}
			// The add commits late after all: the registry removes it.
			c := <-p.late
			if err := p.logProposer.Propose(ctx, c); err != nil {
				t.Fatal(err)
			}
			p.waitLog(t, 2)
			want := []dispatch.CommandKind{dispatch.CmdLoadAdd, dispatch.CmdLoadRemove}
			if got := logKinds(t, p.entries()); !slices.Equal(got, want) {
				t.Fatalf("log %v, want %v", got, want)
			}
			if n, loads := calls(t, r); n != 0 || slices.Max(loads) != 0 {
				t.Fatalf("late add leaked: %d calls, loads %v", n, loads)
			}
			if failed(LoadCommitSync)+failed(LoadCommitAsync) != 1 {
				t.Fatal("counted in the wrong mode")
			}
		})
	}
}

// levelCounter counts log records by level.
type levelCounter struct {
	mu sync.Mutex
	n  map[slog.Level]int
}

func (h *levelCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelCounter) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Level]++
	h.mu.Unlock()
	return nil
}
func (h *levelCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *levelCounter) WithGroup(string) slog.Handler      { return h }
func (h *levelCounter) count(l slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n[l]
}

// Without a quorum every async LoadAdd fails: each is counted, the
// reservations go, and one warning stands for the burst (no log flood).
func TestAsyncLoadFailuresCountedNotFlooded(t *testing.T) {
	ctx := context.Background()
	var failed atomic.Int64
	h := &levelCounter{n: map[slog.Level]int{}}
	r, p := newReplicated(t, threeGateways(), Options{Logger: slog.New(h),
		OnLoadCommitFailure: func(m string) {
			if m == LoadCommitAsync {
				failed.Add(1)
			}
		}})
	p.setFail(errors.New("no quorum"))
	const n = 200
	for i := range n {
		sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite(fmt.Sprint("c", i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		r.CommitLoadAsync(sel)
	}
	waitUntil(t, "every failure counted", func() bool { return failed.Load() == n })
	if w := h.count(slog.LevelWarn); w != 1 {
		t.Fatalf("%d warnings for %d failures in one burst, want 1", w, n)
	}
	if d := h.count(slog.LevelDebug); d != n-1 {
		t.Fatalf("%d debug records, want %d", d, n-1)
	}
	// Each reservation was dropped before its failure was counted.
	sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("probe"), 0)
	if err != nil || sel.Dests[0].Attrs.DUID != "gw1" {
		t.Fatalf("pick %v %v after the failures, want gw1: reservations leaked", sel.Dests, err)
	}
}

// The memory of failed adds is bounded: when full, expired Call-IDs go
// first, then arbitrary ones, and the newest failure is always kept.
func TestFailedLoadsBounded(t *testing.T) {
	var o loadOrder
	now := time.Unix(1_700_000_000, 0)
	fail := errors.New("no quorum")
	for i := range maxFailedLoads {
		id := fmt.Sprint("c", i)
		o.start(id)
		until := now.Add(time.Hour)
		if i%2 == 0 {
			until = now.Add(-time.Second) // already past
		}
		if _, ok := o.finish(id, fail, now, until); ok {
			t.Fatal("a failed add reported committed")
		}
	}
	if len(o.failed) != maxFailedLoads {
		t.Fatalf("%d remembered, want %d", len(o.failed), maxFailedLoads)
	}
	o.start("newest")
	o.finish("newest", fail, now, now.Add(time.Hour))
	if n := len(o.failed); n > maxFailedLoads/2+1 {
		t.Fatalf("%d remembered after pruning, want the %d unexpired at most", n, maxFailedLoads/2+1)
	}
	if !o.applied("newest", now) {
		t.Fatal("the newest failure was pruned")
	}
	if o.applied("c0", now) {
		t.Fatal("an expired failure still asks for a removal")
	}
}
