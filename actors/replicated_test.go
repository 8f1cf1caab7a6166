package actors

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// logProposer is an in-memory stand-in for the cluster: it appends each
// command, in its wire format, to a log and applies it through the local
// registry's Apply while holding its lock, as the FSM applies in log order.
type logProposer struct {
	mu    sync.Mutex
	log   [][]byte
	local *Registry
	fail  error              // when set, Propose fails and nothing is logged
	tried []dispatch.Command // every proposal, failed or not
}

func (p *logProposer) Propose(ctx context.Context, c dispatch.Command) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b, err := dispatch.EncodeCommand(c)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tried = append(p.tried, c)
	if p.fail != nil {
		return p.fail
	}
	if p.local == nil {
		return errNotReady // a registry proposing from NewRegistry (PendingFile)
	}
	return p.commitLocked(b)
}

// commit appends c to the log and applies it even while proposals fail: a
// command an earlier leader logged, committed late.
func (p *logProposer) commit(c dispatch.Command) error {
	b, err := dispatch.EncodeCommand(c)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.commitLocked(b)
}

func (p *logProposer) commitLocked(b []byte) error {
	p.log = append(p.log, b)
	dc, err := dispatch.DecodeCommand(b)
	if err != nil {
		return err
	}
	_, err = p.local.Apply(dc)
	return err
}

func (p *logProposer) attempts() []dispatch.Command {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.tried)
}

func (p *logProposer) entries() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.log...)
}

var errNotReady = errors.New("test proposer: no registry yet")

// setLocal sets the registry that applies the log; proposals fail before.
func (p *logProposer) setLocal(r *Registry) {
	p.mu.Lock()
	p.local = r
	p.mu.Unlock()
}

func (p *logProposer) setFail(err error) {
	p.mu.Lock()
	p.fail = err
	p.mu.Unlock()
}

// waitLog waits until the log holds at least n commands.
func (p *logProposer) waitLog(t testing.TB, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d commands in the log", n), func() bool { return len(p.entries()) >= n })
}

// commands decodes the log.
func (p *logProposer) commands(t testing.TB) []dispatch.Command {
	t.Helper()
	var out []dispatch.Command
	for i, b := range p.entries() {
		c, err := dispatch.DecodeCommand(b)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		out = append(out, c)
	}
	return out
}

func newReplicated(t testing.TB, sets []dispatch.Set, o Options) (*Registry, *logProposer) {
	t.Helper()
	p := &logProposer{}
	o.Proposer = p
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r := newTestRegistry(t, sets, o)
	p.setLocal(r)
	return r, p
}

// replay applies a log to r in order, as a follower's FSM would.
func replay(t *testing.T, r *Registry, log [][]byte) {
	t.Helper()
	for i, b := range log {
		c, err := dispatch.DecodeCommand(b)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		// The leader's result was returned to its proposer; a follower gets
		// the same one, so errors are only compared, not fatal.
		_, _ = r.Apply(c)
	}
}

func mustSnapshot(t *testing.T, r *Registry) []byte {
	t.Helper()
	b, err := r.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fixedClock() func() time.Time {
	at := time.Unix(1_700_000_000, 0)
	return func() time.Time { return at }
}

// Many goroutines drive a replicated registry at once: selects with call
// load, marks, probes, confirms, removes, a reload and a sweep. A second
// registry fed the same log, and a third restored from a snapshot, end
// byte-identical to it.
func TestReplicatedConcurrentLogReplaysIdentically(t *testing.T) {
	a, p := newReplicated(t, threeGateways(), Options{})
	ctx := context.Background()
	const workers, calls = 6, 40
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range calls {
				id := fmt.Sprintf("w%d-c%d", w, i)
				sel, err := a.Select(ctx, 1, dispatch.AlgCallLoad, invite(id), 0)
				if err != nil {
					t.Errorf("select: %v", err)
					return
				}
				if !sel.LoadAdded {
					t.Errorf("%s: LoadAdded false; want the entry committed", id)
					return
				}
				switch i % 4 {
				case 0:
					a.LoadConfirm(1, id)
				case 1:
					a.LoadRemove(-1, id)
				case 2:
					err = a.Mark(ctx, 1, "sip:127.0.0.1:5083", mustMarkOp(t, []string{"t", "a"}[w%2]))
				}
				if err != nil {
					t.Errorf("%s: %v", id, err)
				}
			}
		}()
	}
	a.ReportProbe(1, "sip:127.0.0.1:5082", dispatch.ProbeResult{Timeout: true})
	next := append(threeGateways(), dispatch.Set{ID: 2, Dests: []dispatch.Destination{dest(2, "sip:127.0.0.2:5060", "127.0.0.2", 0, "")}})
	if err := a.Replace(ctx, next); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	a.ExpireLoad(time.Now().Add(-time.Hour)) // expires nothing, but is logged
	waitLoads(t, a)
	// Each call proposes its LoadAdd and, three times in four, one more;
	// then the probe, the reload and the sweep.
	p.waitLog(t, workers*calls+workers*calls*3/4+3)
	st, err := a.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 || st[0].Calls != workers*calls*3/4 {
		t.Fatalf("sets %d, calls %d; want 2 sets and %d calls", len(st), st[0].Calls, workers*calls*3/4)
	}
	log := p.entries()
	kinds := map[dispatch.CommandKind]int{}
	for _, c := range p.commands(t) {
		kinds[c.Kind]++
	}
	if kinds[dispatch.CmdProbe] != 1 || kinds[dispatch.CmdLoadExpire] != 1 || kinds[dispatch.CmdLoadAdd] != workers*calls ||
		kinds[dispatch.CmdLoadConfirm] != workers*calls/4 || kinds[dispatch.CmdLoadRemove] != workers*calls/4 {
		t.Fatalf("log %v: every command once", kinds)
	}
	want := mustSnapshot(t, a)

	b := newTestRegistry(t, threeGateways(), Options{Seed: 77})
	replay(t, b, log)
	if got := mustSnapshot(t, b); !bytes.Equal(got, want) {
		t.Fatal("a registry replaying the log differs from the proposer's")
	}
	c := newTestRegistry(t, nil, Options{Seed: 5})
	if err := c.Restore(want); err != nil {
		t.Fatal(err)
	}
	if got := mustSnapshot(t, c); !bytes.Equal(got, want) {
		t.Fatal("a registry restored from the snapshot differs")
	}
	if ids := c.IDs(); len(ids) != 2 {
		t.Fatalf("restored sets %v, want [1 2]", ids)
	}
}

type recorder struct {
	mu  sync.Mutex
	evs []dispatch.Event
}

func (r *recorder) add(ev dispatch.Event) {
	r.mu.Lock()
	ev.At = ev.At.UTC()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.evs)
}

// The same operations through an external proposer and through the
// registry's own in-memory log leave the same state, call load and events.
func TestProposerMatchesLocalLog(t *testing.T) {
	ctx := context.Background()
	type harness struct {
		r  *Registry
		ev *recorder
	}
	var local, repl harness
	local.ev, repl.ev = &recorder{}, &recorder{}
	local.r = newTestRegistry(t, threeGateways(), Options{Now: fixedClock(), OnEvent: local.ev.add})
	repl.r, _ = newReplicated(t, threeGateways(), Options{Now: fixedClock(), OnEvent: repl.ev.add})

	later := fixedClock()().Add(3 * time.Hour)
	for _, h := range []harness{local, repl} {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(h.r.Mark(ctx, 1, "sip:127.0.0.1:5082", mustMarkOp(t, "ip")))
		for i := range 5 {
			sel, err := h.r.Select(ctx, 1, dispatch.AlgCallLoad, invite(fmt.Sprint("c", i)), 0)
			must(err)
			if !sel.LoadAdded {
				t.Fatalf("c%d: LoadAdded false", i)
			}
		}
		h.r.LoadConfirm(1, "c0")
		h.r.LoadMove(1, "c1", "sip:127.0.0.1:5082")
		h.r.LoadRemove(-1, "c2")
		h.r.LoadRemove(1, "unknown")
		waitLoads(t, h.r)
		h.r.ReportProbe(1, "sip:127.0.0.1:5082", dispatch.ProbeResult{Code: 200})
		waitUntil(t, "the probe's dst-up", func() bool { return h.ev.len() == 2 })
		must(h.r.Replace(ctx, []dispatch.Set{{ID: 1, Dests: []dispatch.Destination{
			dest(1, "sip:127.0.0.1:6081", "127.0.0.1", 6081, "gw1"),
			dest(1, "sip:127.0.0.1:5082", "127.0.0.1", 5082, "gw2"),
		}}}))
		must(h.r.MarkDUID(ctx, 1, "gw1", dispatch.MarkOp{Set: dispatch.FlagDisabled, Clear: dispatch.FlagInactive | dispatch.FlagTrying, Direct: true}))
		// c0, c1, c3 remain; c4 was on gw3, which the reload removed.
		if st, err := h.r.Status(ctx); err != nil || st[0].Calls != 3 || st[0].Ended != 1 {
			t.Fatalf("before the sweep: %+v %v, want 3 calls and the tombstone of unknown", st, err)
		}
		h.r.ExpireLoad(later)
		// ExpiredLoads is counted once the sweep applied: wait for both.
		waitUntil(t, "the sweep", func() bool {
			st, err := h.r.Status(ctx)
			return err == nil && st[0].Calls == 0 && st[0].Ended == 0 && h.r.ExpiredLoads() >= 3
		})
		if n := h.r.ExpiredLoads(); n != 3 {
			t.Fatalf("ExpiredLoads %d, want 3", n)
		}
	}
	ls, rs := mustSnapshot(t, local.r), mustSnapshot(t, repl.r)
	if !bytes.Equal(ls, rs) {
		lst, _ := local.r.Status(ctx)
		rst, _ := repl.r.Status(ctx)
		t.Fatalf("states differ:\nlocal %+v\nrepl  %+v", lst, rst)
	}
	st, _ := repl.r.Status(ctx)
	if st[0].Calls != 0 || st[0].Dests[0].State.Flags&dispatch.FlagDisabled == 0 {
		t.Fatalf("after the script: %+v; want every call expired and gw1 disabled", st[0])
	}
	local.ev.mu.Lock()
	repl.ev.mu.Lock()
	defer local.ev.mu.Unlock()
	defer repl.ev.mu.Unlock()
	if len(local.ev.evs) != 3 || fmt.Sprint(local.ev.evs) != fmt.Sprint(repl.ev.evs) {
		t.Fatalf("events differ:\nlocal %v\nrepl  %v", local.ev.evs, repl.ev.evs)
	}
}

// A failed proposal reaches the caller of a synchronous change and changes
// nothing; load commands are queued instead and commit once the proposer
// works again.
func TestReplicatedProposeFails(t *testing.T) {
	ctx := context.Background()
	r, p := newReplicated(t, threeGateways(), Options{})
	before := mustSnapshot(t, r)
	errDown := errors.New("no quorum")
	p.setFail(errDown)
	checks := map[string]error{
		"mark":    r.Mark(ctx, 1, "sip:127.0.0.1:5081", mustMarkOp(t, "i")),
		"markall": r.Mark(ctx, 1, "all", mustMarkOp(t, "d")),
		"duid":    r.MarkDUID(ctx, 1, "gw2", mustMarkOp(t, "i")),
		"replace": r.Replace(ctx, threeGateways()[:0]),
		"add":     r.AddDest(ctx, dest(1, "sip:127.0.0.1:5084", "127.0.0.1", 5084, "")),
	}
	for name, err := range checks {
		if !errors.Is(err, errDown) {
			t.Errorf("%s: %v, want the proposer's error", name, err)
		}
	}
	// Load commands are queued, not failed.
	r.LoadConfirm(1, "x")
	r.LoadMove(1, "y", "sip:127.0.0.1:5083")
	r.LoadRemove(-1, "z")
	if qs := r.LoadQueueStats(); qs.Pending != 3 {
		t.Fatalf("%d load commands pending, want 3", qs.Pending)
	}
	_, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("lost"), 0)
	if !errors.Is(err, ErrLoadNotCommitted) || !errors.Is(err, errDown) {
		t.Fatalf("select: %v, want ErrLoadNotCommitted with the proposer's error", err)
	}
	// The reservation was dropped (the actor serves the drop before this
	// status request), so gw1 is the least loaded again.
	if st, _ := r.Status(ctx); st[0].Reserved != 0 {
		t.Fatalf("%d reservations left after a failed commit", st[0].Reserved)
	}
	// A destination that does not exist is refused before proposing.
	if err := r.Mark(ctx, 1, "sip:10.9.9.9", mustMarkOp(t, "i")); !errors.Is(err, dispatch.ErrUnknownDestination) {
		t.Fatalf("mark of an unknown destination: %v", err)
	}
	if err := r.Mark(ctx, 9, "sip:10.9.9.9", mustMarkOp(t, "i")); !errors.Is(err, dispatch.ErrUnknownSet) {
		t.Fatalf("mark in an unknown set: %v", err)
	}
	if len(p.entries()) != 0 || !bytes.Equal(before, mustSnapshot(t, r)) {
		t.Fatal("a failed proposal changed the state")
	}
	// confirm x, move y, remove z and the removal of the failed add.
	if qs := r.LoadQueueStats(); qs.Pending != 4 {
		t.Fatalf("queue %+v, want 4 pending", qs)
	}
	p.setFail(nil)
	waitLoads(t, r)
	got := map[string]dispatch.CommandKind{}
	for _, c := range p.commands(t) {
		got[c.CallID] = c.Kind
	}
	want := map[string]dispatch.CommandKind{"x": dispatch.CmdLoadConfirm, "y": dispatch.CmdLoadMove,
		"z": dispatch.CmdLoadRemove, "lost": dispatch.CmdLoadRemove}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("committed %v, want %v", got, want)
	}
	sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("next"), 0)
	if err != nil || sel.Dests[0].Attrs.DUID != "gw1" || !sel.LoadAdded {
		t.Fatalf("pick after a failed commit: %v %v, want gw1", sel.Dests, err)
	}
}

// heldProposer records proposals without committing them.
type heldProposer struct {
	mu  sync.Mutex
	got []dispatch.Command
}

func (h *heldProposer) Propose(_ context.Context, c dispatch.Command) error {
	h.mu.Lock()
	h.got = append(h.got, c)
	h.mu.Unlock()
	return nil
}

func (h *heldProposer) commands() []dispatch.Command {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.got)
}

// Between selection and commit, reservations keep least-loaded exact; they
// end when the LoadAdd applies or at ReserveTimeout. A retransmitted INVITE
// of a call whose add is still being committed gets ErrLoadInFlight.
func TestReservationsKeepLeastLoaded(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := &heldProposer{}
	r := newTestRegistry(t, threeGateways(), Options{Proposer: h, Now: clock, ReserveTimeout: 2 * time.Second})
	picks := map[string]int{}
	for i := range 6 {
		sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite(fmt.Sprint("r", i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.LoadAdded {
			t.Fatalf("r%d: LoadAdded false", i)
		}
		picks[sel.Dests[0].Attrs.DUID]++
	}
	if picks["gw1"] != 2 || picks["gw2"] != 2 || picks["gw3"] != 2 {
		t.Fatalf("uncommitted picks %v, want 2 each", picks)
	}
	cmds := h.commands()
	if len(cmds) != 6 {
		t.Fatalf("%d proposals, want 6 LoadAdds", len(cmds))
	}
	// A retransmitted INVITE is not reserved twice.
	if _, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("r0"), 0); !errors.Is(err, ErrLoadInFlight) {
		t.Fatalf("retransmission: %v, want ErrLoadInFlight", err)
	}
	if n := len(h.commands()); n != 6 {
		t.Fatalf("the retransmission proposed: %d proposals", n)
	}
	// Commit r0 (gw1): its reservation becomes a real load; the others stay.
	if _, err := r.Apply(cmds[0]); err != nil {
		t.Fatal(err)
	}
	st, _ := r.Status(ctx)
	if st[0].Dests[0].State.Load != 1 || st[0].Calls != 1 || st[0].Reserved != 5 {
		t.Fatalf("after one commit: %+v", st[0])
	}
	sel, _ := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("r6"), 0)
	if d := sel.Dests[0].Attrs.DUID; d != "gw1" {
		t.Fatalf("with 2 reserved-or-loaded each, pick %s, want gw1 (lowest index)", d)
	}
	// Past the timeout only the committed call counts: gw2 is least loaded.
	mu.Lock()
	now = now.Add(3 * time.Second)
	mu.Unlock()
	sel, _ = r.Select(ctx, 1, dispatch.AlgCallLoad, invite("r7"), 0)
	if d := sel.Dests[0].Attrs.DUID; d != "gw2" {
		t.Fatalf("after the reservations expired, pick %s, want gw2", d)
	}
	st, _ = r.Status(ctx)
	if l := []int{st[0].Dests[0].State.Load, st[0].Dests[1].State.Load, st[0].Dests[2].State.Load}; l[0] != 1 || l[1] != 0 || l[2] != 0 {
		t.Fatalf("loads %v leak reservations; want [1 0 0]", l)
	}
	if st[0].Reserved != 1 {
		t.Fatalf("%d reservations after the timeout, want r7's only", st[0].Reserved)
	}
}

func TestApplyAndRestoreErrors(t *testing.T) {
	r, _ := newReplicated(t, threeGateways(), Options{})
	if _, err := r.Apply(dispatch.Command{Kind: dispatch.CmdMark, Set: 4, URI: "all"}); !errors.Is(err, dispatch.ErrUnknownSet) {
		t.Fatalf("apply to an unknown set: %v", err)
	}
	if _, err := r.Apply(dispatch.Command{Kind: dispatch.CmdLoadAdd, Set: 1, DUID: "nope", CallID: "x"}); !errors.Is(err, dispatch.ErrUnknownDestination) {
		t.Fatalf("apply to an unknown destination: %v", err)
	}
	before := mustSnapshot(t, r)
	if err := r.Restore(before[:len(before)-3]); !errors.Is(err, dispatch.ErrMalformed) {
		t.Fatalf("restore of a truncated snapshot: %v", err)
	}
	if !bytes.Equal(before, mustSnapshot(t, r)) {
		t.Fatal("a failed restore changed the state")
	}
	// Restore drops sets the snapshot does not have.
	empty := newTestRegistry(t, nil, Options{})
	if err := r.Restore(mustSnapshot(t, empty)); err != nil {
		t.Fatal(err)
	}
	if ids := r.IDs(); len(ids) != 0 {
		t.Fatalf("sets after restoring an empty snapshot: %v", ids)
	}
}

type blockingProposer struct{ started chan struct{} }

// Stop cancels background proposals (probe results, sweeps) and the load
// queue's attempts, and waits for them instead of leaking goroutines or
// hanging until ProposeTimeout.

func (b blockingProposer) Propose(ctx context.Context, _ dispatch.Command) error {
	select {
	case b.started <- struct{}{}:
	default: // a retry nobody waits for
	}
	<-ctx.Done()
	return ctx.Err()
}

func TestStopCancelsBackgroundProposals(t *testing.T) {
	bp := blockingProposer{started: make(chan struct{}, 8)}
	r, err := NewRegistry(testConfig(), threeGateways(), Options{Seed: 1, Proposer: bp, ProposeTimeout: time.Hour,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	r.ReportProbe(1, "sip:127.0.0.1:5081", dispatch.ProbeResult{Code: 200})
	r.ExpireLoad(time.Now())
	r.LoadRemove(1, "bye")
	for range 3 {
		<-bp.started
	}
	done := make(chan struct{})
	go func() { r.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Stop did not return while background proposals were blocked")
	}
	r.ReportProbe(1, "sip:127.0.0.1:5081", dispatch.ProbeResult{Code: 200}) // after Stop: dropped, no panic
}

// Commands for "any set" reach the set that has the Call-ID; a sweep reaches
// every set.
func TestApplyAnySet(t *testing.T) {
	ctx := context.Background()
	sets := append(threeGateways(), dispatch.Set{ID: 2, Dests: []dispatch.Destination{
		dest(2, "sip:127.0.0.2:5060", "127.0.0.2", 0, ""),
		dest(2, "sip:127.0.0.2:5070", "127.0.0.2", 5070, ""),
	}})
	r, _ := newReplicated(t, sets, Options{Now: fixedClock()})
	at := fixedClock()().UnixNano()
	apply := func(c dispatch.Command) {
		t.Helper()
		if _, err := r.Apply(c); err != nil {
			t.Fatalf("%s: %v", c.Kind, err)
		}
	}
	apply(dispatch.Command{Kind: dispatch.CmdLoadAdd, At: at, Set: 2, URI: "sip:127.0.0.2:5060", CallID: "in2"})
	apply(dispatch.Command{Kind: dispatch.CmdLoadAdd, At: at, Set: 1, DUID: "gw1", CallID: "in1"})
	r.LoadMove(2, "in2", "sip:127.0.0.2:5070")
	waitLoads(t, r)
	st, _ := r.Status(ctx)
	if st[1].Dests[0].State.Load != 0 || st[1].Dests[1].State.Load != 1 {
		t.Fatalf("set 2 after a move: %+v", st[1].Dests)
	}
	r.LoadRemove(-1, "in2")
	waitLoads(t, r)
	st, _ = r.Status(ctx)
	if st[0].Calls != 1 || st[1].Calls != 0 {
		t.Fatalf("calls %d/%d after removing in2, want 1/0", st[0].Calls, st[1].Calls)
	}
	// A removal for any set that no set knows leaves a tombstone in each.
	apply(dispatch.Command{Kind: dispatch.CmdLoadRemove, At: at, Set: -1, CallID: "nowhere"})
	if st, _ = r.Status(ctx); st[0].Ended != 1 || st[1].Ended != 1 {
		t.Fatalf("tombstones %d/%d after removing an unknown call, want 1/1", st[0].Ended, st[1].Ended)
	}
	apply(dispatch.Command{Kind: dispatch.CmdLoadAdd, At: at, Set: 2, URI: "sip:127.0.0.2:5060", CallID: "late"})
	r.ExpireLoad(fixedClock()().Add(3 * time.Hour))
	waitUntil(t, "a sweep of every set", func() bool {
		st, _ = r.Status(ctx)
		return st[0].Calls == 0 && st[1].Calls == 0 && st[0].Ended == 0 && st[1].Ended == 0 && r.ExpiredLoads() >= 2
	})
	if n := r.ExpiredLoads(); n != 2 {
		t.Fatalf("ExpiredLoads %d, want 2 (in1 and late)", n)
	}
}

// statusURIs lists each set's destination URIs with their flags.
func statusURIs(t *testing.T, r *Registry) map[int]map[string]dispatch.Flags {
	t.Helper()
	st, err := r.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[int]map[string]dispatch.Flags)
	for _, s := range st {
		out[s.ID] = make(map[string]dispatch.Flags)
		for _, d := range s.Dests {
			out[s.ID][d.URI] = d.State.Flags
		}
	}
	return out
}

// Runtime adds and removes apply to the sets as committed: concurrent edits
// all survive, state and load carry over, and a follower replaying the log
// ends with the same state; through the in-memory log the same edits give
// the same sets.
func TestAddRemoveDest(t *testing.T) {
	for _, external := range []bool{false, true} {
		t.Run(fmt.Sprintf("proposer=%v", external), func(t *testing.T) {
			ctx := context.Background()
			var r *Registry
			var p *logProposer
			if external {
				r, p = newReplicated(t, threeGateways(), Options{})
			} else {
				r = newTestRegistry(t, threeGateways(), Options{})
			}
			if err := r.Mark(ctx, 1, "sip:127.0.0.1:5081", mustMarkOp(t, "i")); err != nil {
				t.Fatal(err)
			}
			sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("held"), 0)
			if err != nil || !sel.LoadAdded {
				t.Fatalf("select: %v %+v", err, sel)
			}
			const adds = 8
			var wg sync.WaitGroup
			for i := range adds {
				wg.Add(1)
				go func() {
					defer wg.Done()
					d := dest(2+i%2, fmt.Sprintf("sip:127.0.0.%d:5060", 10+i), fmt.Sprintf("127.0.0.%d", 10+i), 5060, "")
					if err := r.AddDest(ctx, d); err != nil {
						t.Errorf("add %s: %v", d.URI, err)
					}
				}()
			}
			wg.Wait()
			if err := r.RemoveDest(ctx, 1, "sip:127.0.0.1:5083"); err != nil {
				t.Fatal(err)
			}
			if err := r.RemoveDest(ctx, 1, "sip:127.0.0.1:5083"); !errors.Is(err, dispatch.ErrUnknownDestination) {
				t.Fatalf("second remove: %v, want ErrUnknownDestination", err)
			}
			got := statusURIs(t, r)
			if len(got) != 3 || len(got[1]) != 2 || len(got[2])+len(got[3]) != adds {
				t.Fatalf("sets after edits: %v; want set 1 with 2 and %d added in sets 2 and 3", got, adds)
			}
			if f := got[1]["sip:127.0.0.1:5081"]; f&dispatch.FlagInactive == 0 {
				t.Errorf("gw1 flags %v after the edits; the inactive mark was not carried over", f)
			}
			st, _ := r.Status(ctx)
			if st[0].Calls != 1 {
				t.Errorf("set 1 has %d call-load entries after the edits, want the held call", st[0].Calls)
			}
			if !external {
				return
			}
			follower := newTestRegistry(t, threeGateways(), Options{Seed: 9})
			replay(t, follower, p.entries())
			if !bytes.Equal(mustSnapshot(t, follower), mustSnapshot(t, r)) {
				t.Fatal("a registry replaying the log differs from the proposer's")
			}
		})
	}
}
