package actors

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

var errNoLeader = errors.New("no leader")

// loadStatus returns each set's status with its call-load entries.
func loadStatus(t testing.TB, r *Registry) []SetStatus {
	t.Helper()
	st, err := r.LoadEntries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// Removals queued while the proposer fails (an election: "no leader") are
// retried with backoff and commit once it works again; none is dropped, and
// LoadQueueStats counts the retries.
func TestQueuedRemovalRetriedUntilCommitted(t *testing.T) {
	ctx := context.Background()
	r, p := newReplicated(t, threeGateways(), Options{})
	const n = 5
	for i := range n {
		if sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite(fmt.Sprint("c", i)), 0); err != nil || !sel.LoadAdded {
			t.Fatalf("select: %v %+v", err, sel)
		}
	}
	p.setFail(errNoLeader)
	for i := range n {
		r.LoadRemove(1, fmt.Sprint("c", i))
	}
	waitUntil(t, "every removal retried", func() bool { return r.LoadQueueStats().Retries >= 2*n })
	qs := r.LoadQueueStats()
	if qs.Pending != n || qs.GivenUp != 0 || qs.Rejected != 0 {
		t.Fatalf("queue %+v while failing, want %d pending and nothing dropped", qs, n)
	}
	if st := loadStatus(t, r); st[0].Calls != n {
		t.Fatalf("%d calls while the removals fail, want %d", st[0].Calls, n)
	}
	if got := len(r.PendingLoads(0)); got != n {
		t.Fatalf("PendingLoads lists %d failed commands, want %d", got, n)
	}
	tries := 0
	for _, c := range p.attempts() {
		if c.Kind == dispatch.CmdLoadRemove {
			tries++
		}
	}
	if tries < 2*n {
		t.Fatalf("%d removal proposals, want each tried more than once", tries)
	}
	p.setFail(nil)
	waitLoads(t, r)
	qs = r.LoadQueueStats()
	if qs.Pending != 0 || qs.GivenUp != 0 || qs.Rejected != 0 || qs.Retries < 2*n {
		t.Fatalf("queue %+v after the proposer recovered", qs)
	}
	st := loadStatus(t, r)
	if st[0].Calls != 0 || st[0].Ended != 0 {
		t.Fatalf("after the removals: %d calls, %d tombstones; want none", st[0].Calls, st[0].Ended)
	}
	for _, d := range st[0].Dests {
		if d.State.Load != 0 {
			t.Fatalf("%s load %d after the removals", d.URI, d.State.Load)
		}
	}
	rm := callIDs(p.commands(t), dispatch.CmdLoadRemove)
	slices.Sort(rm)
	if want := []string{"c0", "c1", "c2", "c3", "c4"}; !slices.Equal(rm, want) {
		t.Fatalf("committed removals %v, want each of %v once", rm, want)
	}
}

// A sync add that cannot commit fails Select with ErrLoadNotCommitted and
// queues the call's removal. Should the add still commit (a leader that lost
// its quorum kept it in its log), the call ends without an entry either way:
// applied after the removal it is refused, applied before it the removal
// takes it away.
func TestFailedSyncAddLeavesNoEntry(t *testing.T) {
	for _, late := range []string{"after the removal", "before the removal"} {
		t.Run(late, func(t *testing.T) {
			ctx := context.Background()
			var failures atomic.Int64
			r, p := newReplicated(t, threeGateways(), Options{OnLoadCommitFailure: func(m string) {
				if m == LoadCommitSync {
					failures.Add(1)
				}
			}})
			p.setFail(errNoLeader)
			sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("lost"), 0)
			if !errors.Is(err, ErrLoadNotCommitted) || !errors.Is(err, errNoLeader) || sel.LoadAdded {
				t.Fatalf("select: %v %+v, want ErrLoadNotCommitted with the proposer's error", err, sel)
			}
			if failures.Load() != 1 {
				t.Fatalf("%d failures counted, want 1", failures.Load())
			}
			i := slices.IndexFunc(p.attempts(), func(c dispatch.Command) bool { return c.Kind == dispatch.CmdLoadAdd })
			if i < 0 {
				t.Fatal("no LoadAdd was proposed")
			}
			add := p.attempts()[i]
			st := loadStatus(t, r)
			if st[0].Calls != 0 || st[0].Reserved != 0 {
				t.Fatalf("after the failure: %d calls, %d reserved; want none", st[0].Calls, st[0].Reserved)
			}
			if qs := r.LoadQueueStats(); qs.Pending != 1 {
				t.Fatalf("queue %+v, want the call's removal pending", qs)
			}
			if late == "before the removal" {
				if err := p.commit(add); err != nil {
					t.Fatalf("late add before the removal: %v", err)
				}
				if st := loadStatus(t, r); st[0].Calls != 1 {
					t.Fatalf("%d calls after the late add, want 1", st[0].Calls)
				}
			}
			p.setFail(nil)
			waitLoads(t, r)
			if late == "after the removal" {
				if st := loadStatus(t, r); st[0].Ended != 1 {
					t.Fatalf("%d tombstones after removing a call without entry, want 1", st[0].Ended)
				}
				if err := p.commit(add); !errors.Is(err, dispatch.ErrLoadRefused) {
					t.Fatalf("late add after the removal: %v, want ErrLoadRefused", err)
				}
			}
			st = loadStatus(t, r)
			if st[0].Calls != 0 || len(st[0].Entries) != 0 {
				t.Fatalf("the failed add left entries %+v", st[0].Entries)
			}
			for _, d := range st[0].Dests {
				if d.State.Load != 0 {
					t.Fatalf("%s load %d after the failed add", d.URI, d.State.Load)
				}
			}
			// The proposer recovered: the call can be placed again, on the
			// same least-loaded destination.
			again, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("again"), 0)
			if err != nil || !again.LoadAdded || again.Dests[0].Attrs.DUID != add.DUID {
				t.Fatalf("next call: %v %+v, want %s", err, again, add.DUID)
			}
		})
	}
}

// Commands pending when the registry stops are in Options.PendingFile; a
// registry started on the same file proposes them, and once they committed
// the file lists nothing more.
func TestPendingFileProposedAfterRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pending-loads")
	down := &logProposer{fail: errNoLeader}
	a := newTestRegistry(t, threeGateways(), Options{Proposer: down, PendingFile: path})
	down.setLocal(a)
	if _, err := a.Select(ctx, 1, dispatch.AlgCallLoad, invite("lost"), 0); !errors.Is(err, ErrLoadNotCommitted) {
		t.Fatalf("select: %v, want ErrLoadNotCommitted", err)
	}
	a.LoadConfirm(1, "x")
	a.LoadMove(1, "y", "sip:127.0.0.1:5082")
	a.LoadRemove(-1, "z")
	// Every command failed at least once: each is listed as pending.
	var pending []dispatch.Command
	waitUntil(t, "every command tried", func() bool { pending = a.PendingLoads(0); return len(pending) == 4 })
	if qs := a.LoadQueueStats(); qs.Pending != 4 || qs.Retries == 0 {
		t.Fatalf("queue %+v before the stop, want 4 pending", qs)
	}
	key := func(c dispatch.Command) string {
		return fmt.Sprintf("%s %s %d %d %s", c.Kind, c.CallID, c.Set, c.At, c.URI+c.DUID)
	}
	var wantKeys []string
	for _, c := range pending {
		wantKeys = append(wantKeys, key(c))
	}
	a.Stop()
	if fi, err := os.Stat(path); err != nil || fi.Size() == 0 {
		t.Fatalf("pending file after the stop: %v %v", fi, err)
	}

	up := &logProposer{}
	b := newTestRegistry(t, threeGateways(), Options{Proposer: up, PendingFile: path})
	up.setLocal(b)
	waitLoads(t, b)
	var gotKeys []string
	for _, c := range up.commands(t) {
		gotKeys = append(gotKeys, key(c))
	}
	slices.Sort(gotKeys)
	slices.Sort(wantKeys)
	if !slices.Equal(gotKeys, wantKeys) {
		t.Fatalf("after the restart the log holds\n%v\nwant the pending commands\n%v", gotKeys, wantKeys)
	}
	if st := loadStatus(t, b); st[0].Ended != 2 {
		t.Fatalf("%d tombstones, want those of lost and z", st[0].Ended)
	}
	b.Stop()

	// Everything committed: a third start has nothing to propose.
	again := &logProposer{fail: errNoLeader}
	c := newTestRegistry(t, threeGateways(), Options{Proposer: again, PendingFile: path})
	again.setLocal(c)
	if qs := c.LoadQueueStats(); qs.Pending != 0 {
		t.Fatalf("queue %+v after a restart with everything committed", qs)
	}
}

// A removal for set -1 (a BYE that does not name its set) finds the call in
// whichever set has it; LoadEntries lists each set's Call-IDs with their
// destinations; a retransmitted BYE adds nothing to the queue.
func TestRemoveAnySetAndEntries(t *testing.T) {
	ctx := context.Background()
	sets := append(threeGateways(), dispatch.Set{ID: 2, Dests: []dispatch.Destination{
		dest(2, "sip:127.0.0.2:5060", "127.0.0.2", 0, ""),
		dest(2, "sip:127.0.0.2:5070", "127.0.0.2", 5070, ""),
	}})
	r, p := newReplicated(t, sets, Options{})
	placed := map[int]map[string]string{1: {}, 2: {}}
	for _, c := range []struct {
		set int
		id  string
	}{{1, "a"}, {2, "b"}, {2, "c"}, {1, "d"}} {
		sel, err := r.Select(ctx, c.set, dispatch.AlgCallLoad, invite(c.id), 0)
		if err != nil || !sel.LoadAdded {
			t.Fatalf("select %s: %v %+v", c.id, err, sel)
		}
		placed[c.set][c.id] = sel.Dests[0].URI
	}
	entries := func() map[int]map[string]string {
		out := map[int]map[string]string{}
		for _, s := range loadStatus(t, r) {
			out[s.ID] = map[string]string{}
			if len(s.Entries) != s.Calls {
				t.Fatalf("set %d: %d entries listed for %d calls", s.ID, len(s.Entries), s.Calls)
			}
			for _, e := range s.Entries {
				if e.Confirmed || e.Since.IsZero() || !e.Expires.After(e.Since) {
					t.Fatalf("entry %+v", e)
				}
				out[s.ID][e.CallID] = s.Dests[e.Dest].URI
			}
		}
		return out
	}
	if got := entries(); fmt.Sprint(got) != fmt.Sprint(placed) {
		t.Fatalf("entries %v, want %v", got, placed)
	}
	if st, _ := r.Status(ctx); st[0].Entries != nil || st[1].Entries != nil {
		t.Fatal("Status lists entries; only LoadEntries should")
	}

	p.setFail(errNoLeader)
	for range 3 { // the BYE and its retransmissions
		r.LoadRemove(-1, "b")
	}
	if qs := r.LoadQueueStats(); qs.Pending != 1 {
		t.Fatalf("queue %+v after a BYE sent three times, want one removal", qs)
	}
	p.setFail(nil)
	waitLoads(t, r)
	delete(placed[2], "b")
	if got := entries(); fmt.Sprint(got) != fmt.Sprint(placed) {
		t.Fatalf("entries after the BYE %v, want %v", got, placed)
	}
	if rm := callIDs(p.commands(t), dispatch.CmdLoadRemove); !slices.Equal(rm, []string{"b"}) {
		t.Fatalf("removals committed %v, want b once", rm)
	}
	for _, s := range loadStatus(t, r) {
		if s.Ended != 0 {
			t.Fatalf("set %d has %d tombstones; the removal found its call", s.ID, s.Ended)
		}
	}
}

// A node hands its long-pending commands over (PendingLoads) and another
// adopts them (AdoptLoad) and commits them; only confirms, moves and
// removals are adopted.
func TestPendingLoadsHandOver(t *testing.T) {
	a, pa := newReplicated(t, threeGateways(), Options{})
	pa.setFail(errNoLeader)
	a.LoadRemove(1, "x")
	var handed []dispatch.Command
	waitUntil(t, "a failed attempt", func() bool { handed = a.PendingLoads(0); return len(handed) == 1 })
	if c := handed[0]; c.Kind != dispatch.CmdLoadRemove || c.CallID != "x" {
		t.Fatalf("handed over %+v", c)
	}

	b, pb := newReplicated(t, threeGateways(), Options{})
	b.AdoptLoad(dispatch.Command{Kind: dispatch.CmdLoadAdd, At: handed[0].At, Set: 1, DUID: "gw1", CallID: "y"})
	if qs := b.LoadQueueStats(); qs.Pending != 0 || qs.Adopted != 0 {
		t.Fatalf("queue %+v: a LoadAdd was adopted", qs)
	}
	b.AdoptLoad(handed[0])
	waitLoads(t, b)
	if qs := b.LoadQueueStats(); qs.Adopted != 1 {
		t.Fatalf("queue %+v, want one adopted", qs)
	}
	if rm := callIDs(pb.commands(t), dispatch.CmdLoadRemove); !slices.Equal(rm, []string{"x"}) {
		t.Fatalf("the adopting node committed %v", rm)
	}
	if len(b.PendingLoads(0)) != 0 {
		t.Fatal("the adopting node hands an adopted command over again")
	}
	// The first node keeps proposing its own copy; it commits too, harmlessly.
	pa.setFail(nil)
	waitLoads(t, a)
}

// racingLog applies, before this node's first LoadAdd, another node's add
// for the same Call-ID on gw1: the same call's INVITE that went through
// another node first.
type racingLog struct {
	mu   sync.Mutex
	r    *Registry
	done bool
}

func (l *racingLog) Propose(ctx context.Context, c dispatch.Command) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.Kind == dispatch.CmdLoadAdd && !l.done {
		l.done = true
		other := c
		other.DUID, other.URI = "gw1", ""
		if _, err := l.r.Apply(other); err != nil {
			return err
		}
	}
	_, err := l.r.Apply(c)
	return err
}

// When another node's add for the call applied first, the Select still
// succeeds (the call has its entry) and the entry follows this pick.
func TestLoadAddOvertakenBySameCall(t *testing.T) {
	p := &racingLog{}
	r := newTestRegistry(t, threeGateways(), Options{Proposer: p})
	p.mu.Lock()
	p.r = r
	p.mu.Unlock()
	ctx := context.Background()
	// gw1 carries a call already, so this node picks another gateway.
	if _, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("first"), 0); err != nil {
		t.Fatal(err)
	}
	sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("dup"), 0)
	if err != nil || !sel.LoadAdded {
		t.Fatalf("select: LoadAdded %v err %v; want the call tracked", sel.LoadAdded, err)
	}
	waitLoads(t, r)
	st, err := r.LoadEntries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var on string
	for _, e := range st[0].Entries {
		if e.CallID == "dup" {
			on = st[0].Dests[e.Dest].URI
		}
	}
	if st[0].Calls != 2 || on != sel.Dests[0].URI {
		t.Fatalf("%d entries, dup on %q; want 2 and dup on this node's pick %s", st[0].Calls, on, sel.Dests[0].URI)
	}
}
