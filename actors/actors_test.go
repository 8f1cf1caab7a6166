package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

func testConfig() *dispatch.Config {
	c := dispatch.DefaultConfig()
	c.HashSize = 8
	return &c
}

func dest(set int, uri, host string, port int, duid string) dispatch.Destination {
	d := dispatch.Destination{SetID: set, URI: uri, Scheme: "sip", Host: host, Port: port}
	if duid != "" {
		d.Attrs = dispatch.Attrs{Raw: "duid=" + duid, DUID: duid, Pairs: []dispatch.Attr{{Name: "duid", Value: duid}}}
	}
	return d
}

func threeGateways() []dispatch.Set {
	return []dispatch.Set{{ID: 1, Dests: []dispatch.Destination{
		dest(1, "sip:127.0.0.1:5081", "127.0.0.1", 5081, "gw1"),
		dest(1, "sip:127.0.0.1:5082", "127.0.0.1", 5082, "gw2"),
		dest(1, "sip:127.0.0.1:5083", "127.0.0.1", 5083, "gw3"),
	}}}
}

func newTestRegistry(t testing.TB, sets []dispatch.Set, o Options) *Registry {
	t.Helper()
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	r, err := NewRegistry(testConfig(), sets, o)
	if err != nil {
		t.Fatalf("NewRegistry: %v", err)
	}
	t.Cleanup(r.Stop)
	return r
}

func invite(callID string) *dispatch.Request {
	return &dispatch.Request{Method: "INVITE", CallID: callID, RURI: "sip:+4930123@example.com", From: "sip:alice@atlanta.com", To: "sip:bob@biloxi.com"}
}

func mustMarkOp(t testing.TB, s string) dispatch.MarkOp {
	t.Helper()
	op, err := dispatch.ParseMarkState(s)
	if err != nil {
		t.Fatalf("ParseMarkState(%q): %v", s, err)
	}
	return op
}

// Round-robin is a per-set cursor owned by the actor: however many goroutines
// select at once, the calls split exactly evenly.
func TestConcurrentRoundRobinIsExact(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	const workers, each = 12, 250
	var mu sync.Mutex
	count := map[string]int{}
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				sel, err := r.Select(context.Background(), 1, dispatch.AlgRoundRobin, invite(fmt.Sprintf("c%d-%d", w, i)), 0)
				if err != nil {
					t.Errorf("select: %v", err)
					return
				}
				mu.Lock()
				count[sel.Dests[0].URI]++
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	for _, d := range threeGateways()[0].Dests {
		if got, want := count[d.URI], workers*each/3; got != want {
			t.Errorf("%s selected %d times, want %d (all: %v)", d.URI, got, want, count)
		}
	}
}

// Marks and selects race from many goroutines; once a mark has returned, no
// later selection may return the inactive gateway.
func TestMarkWhileSelecting(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	ctx := context.Background()
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				if _, err := r.Select(ctx, 1, dispatch.AlgHashCallID, invite(fmt.Sprintf("w%d-%d", w, i)), 0); err != nil {
					t.Errorf("select: %v", err)
					return
				}
			}
		}(w)
	}
	for i := 0; i < 50; i++ {
		state := "i"
		if i%2 == 1 {
			state = "a"
		}
		if err := r.Mark(ctx, 1, "sip:127.0.0.1:5082", mustMarkOp(t, state)); err != nil {
			t.Fatalf("mark: %v", err)
		}
	}
	if err := r.Mark(ctx, 1, "sip:127.0.0.1:5082", mustMarkOp(t, "i")); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 300; i++ {
		sel, err := r.Select(ctx, 1, dispatch.AlgHashCallID, invite(fmt.Sprintf("after-%d", i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if sel.Dests[0].URI == "sip:127.0.0.1:5082" {
			t.Fatalf("inactive gateway selected for call %d", i)
		}
	}
	stop.Store(true)
	wg.Wait()
	if err := r.Mark(ctx, 1, "sip:127.0.0.9:5099", mustMarkOp(t, "a")); !errors.Is(err, dispatch.ErrUnknownDestination) {
		t.Fatalf("mark of an unknown URI: got %v, want ErrUnknownDestination", err)
	}
}

// A full data mailbox answers ErrBusy at once instead of blocking the caller.
func TestFullMailboxIsBusy(t *testing.T) {
	onEvent, entered, release := holdFirstEvent()
	r := newTestRegistry(t, threeGateways(), Options{MailboxSize: 2, OnEvent: onEvent})
	ctx := context.Background()
	marked := make(chan error, 1)
	go func() { marked <- r.Mark(ctx, 1, "sip:127.0.0.1:5082", mustMarkOp(t, "i")) }()
	<-entered // the actor is held inside the mark's apply
	s, _ := r.Lookup(1)
	for i := 0; i < 2; i++ { // fill the two mailbox slots without waiting
		if err := s.send(statusMsg{reply: make(chan SetStatus, 1)}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	if err := s.send(statusMsg{reply: make(chan SetStatus, 1)}); !errors.Is(err, ErrBusy) {
		t.Fatalf("send to a full mailbox: got %v, want ErrBusy", err)
	}
	_, err := r.Select(ctx, 1, dispatch.AlgRoundRobin, invite("x"), 0)
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("select on a full mailbox: got %v, want ErrBusy", err)
	}
	if _, err := s.Status(ctx, false); !errors.Is(err, ErrBusy) {
		t.Fatalf("status on a full mailbox: got %v, want ErrBusy", err)
	}
	close(release)
	if err := <-marked; err != nil {
		t.Fatalf("held mark: %v", err)
	}
	// The two status requests are still queued behind the held apply.
	waitUntil(t, "the mailbox to drain", func() bool { return len(s.data) == 0 })
	if _, err := r.Select(ctx, 1, dispatch.AlgRoundRobin, invite("y"), 0); err != nil {
		t.Fatalf("select after the mailbox drained: %v", err)
	}
}

// A message that makes the actor panic gets an error; the actor keeps serving.
func TestPanicIsRecovered(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	ctx := context.Background()
	if _, err := r.Select(ctx, 1, dispatch.AlgHashCallID, nil, 0); !errors.Is(err, errPanic) {
		t.Fatalf("select with a nil request: got %v, want errPanic", err)
	}
	if _, err := r.Select(ctx, 1, dispatch.AlgHashCallID, invite("ok"), 0); err != nil {
		t.Fatalf("select after a panic: %v", err)
	}
}

// Algorithm 10: a selected INVITE adds one call, BYE (set unknown) removes it.
func TestCallLoadThroughActor(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	ctx := context.Background()
	for i := 0; i < 9; i++ {
		sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite(fmt.Sprintf("call-%d", i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if !sel.LoadAdded {
			t.Fatalf("call %d: LoadAdded false", i)
		}
	}
	st, err := r.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st[0].Calls != 9 || st[0].Reserved != 0 {
		t.Fatalf("calls = %d, reserved %d; want 9 committed and none reserved", st[0].Calls, st[0].Reserved)
	}
	for _, d := range st[0].Dests {
		if d.State.Load != 3 {
			t.Errorf("%s load %d, want 3 (least-loaded spreads evenly)", d.URI, d.State.Load)
		}
	}
	// The same call's INVITE again in a new transaction (retried through
	// this node after another went silent) adds no second entry: the one it
	// has follows the new pick.
	sel, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("call-0"), 0)
	if err != nil || !sel.LoadAdded {
		t.Fatalf("retried INVITE: LoadAdded %v err %v; want the call tracked", sel.LoadAdded, err)
	}
	waitLoads(t, r)
	loadOn := func(want string) map[string]int {
		st, err := r.LoadEntries(ctx)
		if err != nil || st[0].Calls != 9 {
			t.Fatalf("entries: %v, %d calls; want 9", err, st[0].Calls)
		}
		m := map[string]int{}
		for _, d := range st[0].Dests {
			m[d.URI] = d.State.Load
		}
		for _, e := range st[0].Entries {
			if e.CallID == "call-0" && st[0].Dests[e.Dest].URI != want {
				t.Fatalf("call-0 on %s, want %s", st[0].Dests[e.Dest].URI, want)
			}
		}
		return m
	}
	before := loadOn(sel.Dests[0].URI)
	// A failover moves a call: one fewer on its gateway, one more on gw3.
	r.LoadMove(1, "call-0", "sip:127.0.0.1:5083")
	waitLoads(t, r)
	after := loadOn("sip:127.0.0.1:5083")
	if from := sel.Dests[0].URI; from != "sip:127.0.0.1:5083" &&
		(after[from] != before[from]-1 || after["sip:127.0.0.1:5083"] != before["sip:127.0.0.1:5083"]+1) {
		t.Fatalf("after LoadMove %s -> gw3: loads %v, before %v", from, after, before)
	}
	for i := 0; i < 9; i++ {
		r.LoadRemove(-1, fmt.Sprintf("call-%d", i))
	}
	waitLoads(t, r)
	st, _ = r.Status(ctx)
	if st[0].Calls != 0 {
		t.Fatalf("calls after BYEs = %d, want 0", st[0].Calls)
	}
	for _, d := range st[0].Dests {
		if d.State.Load != 0 {
			t.Errorf("%s load %d after BYEs, want 0", d.URI, d.State.Load)
		}
	}
	// A non-INVITE never adds load.
	sel, err = r.Select(ctx, 1, dispatch.AlgCallLoad, &dispatch.Request{Method: "OPTIONS", CallID: "o"}, 0)
	if err != nil || sel.LoadAdded {
		t.Fatalf("OPTIONS with alg 10: LoadAdded=%v err=%v", sel.LoadAdded, err)
	}
	if qs := r.LoadQueueStats(); qs != (LoadQueueStats{}) {
		t.Fatalf("load queue %+v, want empty with nothing retried or dropped", qs)
	}
}

// A load command for a set or destination this node does not know is
// queued anyway (a restarted node knows no set until its log replays) and
// refused only when it applies: counted as rejected, never retried. Without
// call load (ds_hash_size 0) a removal does nothing.
func TestLoadCallsCheckTargetsWhenApplied(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	r.LoadConfirm(7, "x")
	r.LoadMove(7, "x", "sip:127.0.0.1:5081")
	r.LoadMove(1, "y", "sip:10.9.9.9")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.WaitLoads(ctx); err != nil {
		t.Fatal(err)
	}
	if qs := r.LoadQueueStats(); qs.Rejected != 3 || qs.Retries != 0 {
		t.Fatalf("queue %+v: want 3 rejected, none retried", qs)
	}

	cfg := testConfig()
	cfg.HashSize = 0
	p := &logProposer{}
	nolo, err := NewRegistry(cfg, threeGateways(), Options{Seed: 1, Proposer: p, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.setLocal(nolo)
	t.Cleanup(nolo.Stop)
	nolo.LoadRemove(-1, "x")
	nolo.LoadRemove(7, "x")
	sel, err := nolo.Select(context.Background(), 1, dispatch.AlgCallLoad, invite("c"), 0)
	if err != nil || sel.LoadAdded {
		t.Fatalf("alg 10 without call load: LoadAdded %v err %v", sel.LoadAdded, err)
	}
	if qs := nolo.LoadQueueStats(); qs.Pending != 0 || len(p.entries()) != 0 {
		t.Fatalf("without call load: queue %+v, log %d commands; want nothing", qs, len(p.entries()))
	}
}

// A reload keeps state and call load by duid; removed sets stop, new sets start.
func TestReplaceCarriesStateByDUID(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	ctx := context.Background()
	if err := r.Mark(ctx, 1, "sip:127.0.0.1:5082", mustMarkOp(t, "i")); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Select(ctx, 1, dispatch.AlgCallLoad, invite("kept"), 0); err != nil {
		t.Fatal(err)
	}
	before, _ := r.Lookup(1)
	// gw2 moves to a new URI but keeps its duid; set 2 appears.
	next := []dispatch.Set{
		{ID: 1, Dests: []dispatch.Destination{
			dest(1, "sip:127.0.0.1:5081", "127.0.0.1", 5081, "gw1"),
			dest(1, "sip:127.0.0.1:6082", "127.0.0.1", 6082, "gw2"),
			dest(1, "sip:127.0.0.1:5083", "127.0.0.1", 5083, "gw3"),
		}},
		{ID: 2, Dests: []dispatch.Destination{dest(2, "sip:127.0.0.2:5060", "127.0.0.2", 0, "")}},
	}
	if err := r.Replace(ctx, next); err != nil {
		t.Fatal(err)
	}
	after, _ := r.Lookup(1)
	if before != after {
		t.Error("set 1 got a new actor; want the same actor with the new state")
	}
	st, err := r.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st) != 2 {
		t.Fatalf("sets after reload: %d, want 2", len(st))
	}
	if f := st[0].Dests[1].State.Flags; !f.Skip() {
		t.Errorf("gw2 flags after reload %s, want inactive carried over", f.Letters())
	}
	if st[0].Calls != 1 {
		t.Errorf("call-load entries after reload %d, want 1", st[0].Calls)
	}
	// Removing set 2 stops its actor.
	if err := r.Replace(ctx, next[:1]); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Lookup(2); ok {
		t.Error("set 2 still registered after it was removed")
	}
	if _, err := r.Select(ctx, 2, dispatch.AlgFirst, invite("z"), 0); !errors.Is(err, dispatch.ErrUnknownSet) {
		t.Errorf("select on a removed set: %v, want ErrUnknownSet", err)
	}
}

// A reload whose sets cannot be built changes nothing.
func TestReplaceDuplicateSetKeepsOld(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	bad := append(threeGateways(), threeGateways()...)
	if err := r.Replace(context.Background(), bad); err == nil {
		t.Fatal("reload with set 1 twice succeeded")
	}
	if ids := r.IDs(); len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("sets after a failed reload: %v", ids)
	}
	if _, err := r.Select(context.Background(), 1, dispatch.AlgFirst, invite("a"), 0); err != nil {
		t.Fatalf("select after failed reload: %v", err)
	}
}

func TestFromSet(t *testing.T) {
	sets := threeGateways()
	sets[0].Dests = append(sets[0].Dests, dispatch.Destination{SetID: 1, URI: "sip:10.0.0.1;transport=tcp", Scheme: "sip", Host: "10.0.0.1", Transport: "tcp"})
	tests := []struct {
		mode  int
		ip    string
		port  int
		proto string
		want  bool
	}{
		{0, "127.0.0.1", 5081, "udp", true},
		{0, "127.0.0.1", 5081, "UDP", true},
		{0, "127.0.0.1", 40000, "udp", false},
		{1, "127.0.0.1", 40000, "udp", true},
		{0, "127.0.0.1", 5081, "tcp", false},
		{2, "127.0.0.1", 5081, "tcp", true},
		{0, "10.0.0.1", 5060, "tcp", true},
		{0, "::ffff:10.0.0.1", 5060, "tcp", true},
		{0, "127.0.0.2", 5081, "udp", false},
		{0, "not-an-ip", 5081, "udp", false},
		// A per-route mode arrives as port 0 (any port) or proto "" (any transport).
		{0, "127.0.0.1", 0, "udp", true},
		{0, "127.0.0.1", 5081, "", true},
		{0, "127.0.0.1", 0, "", true},
		{0, "127.0.0.2", 0, "", false},
	}
	for _, tc := range tests {
		r := newTestRegistry(t, sets, Options{FromSetMode: tc.mode})
		if got := r.FromSet(1, tc.ip, tc.port, tc.proto); got != tc.want {
			t.Errorf("mode %d FromSet(%s:%d/%s) = %v, want %v", tc.mode, tc.ip, tc.port, tc.proto, got, tc.want)
		}
		if got := r.FromSet(-1, tc.ip, tc.port, tc.proto); got != tc.want {
			t.Errorf("mode %d FromSet(any, %s:%d/%s) = %v, want %v", tc.mode, tc.ip, tc.port, tc.proto, got, tc.want)
		}
		if r.FromSet(7, tc.ip, tc.port, tc.proto) {
			t.Errorf("FromSet on an unknown set matched")
		}
	}
}

func TestStoppedRegistry(t *testing.T) {
	r := newTestRegistry(t, threeGateways(), Options{})
	s, _ := r.Lookup(1)
	r.Stop()
	if _, err := r.Select(context.Background(), 1, dispatch.AlgFirst, invite("a"), 0); !errors.Is(err, ErrStopped) {
		t.Fatalf("select after Stop: %v, want ErrStopped", err)
	}
	if _, err := s.Status(context.Background(), false); !errors.Is(err, ErrStopped) {
		t.Fatalf("status after Stop: %v, want ErrStopped", err)
	}
	if err := r.Mark(context.Background(), 1, "all", mustMarkOp(t, "i")); !errors.Is(err, ErrStopped) {
		t.Fatalf("mark after Stop: %v, want ErrStopped", err)
	}
	if err := r.Replace(context.Background(), threeGateways()); !errors.Is(err, ErrStopped) {
		t.Fatalf("replace after Stop: %v, want ErrStopped", err)
	}
}

func TestSelectRespectsContext(t *testing.T) {
	onEvent, entered, release := holdFirstEvent()
	r := newTestRegistry(t, threeGateways(), Options{OnEvent: onEvent})
	marked := make(chan error, 1)
	go func() { marked <- r.Mark(context.Background(), 1, "sip:127.0.0.1:5081", mustMarkOp(t, "i")) }()
	<-entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := r.Select(ctx, 1, dispatch.AlgFirst, invite("a"), 0)
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("select with a cancelled ctx on a held actor: %v", err)
	}
	if err := <-marked; err != nil {
		t.Fatal(err)
	}
}

func BenchmarkActorSelectRoundTrip(b *testing.B) {
	for _, alg := range []dispatch.Algorithm{dispatch.AlgHashCallID, dispatch.AlgRoundRobin, dispatch.AlgCallLoad} {
		b.Run(alg.String(), func(b *testing.B) {
			r := newTestRegistry(b, threeGateways(), Options{})
			ctx := context.Background()
			req := invite("a84b4c76e66710@pc33.atlanta.com")
			if alg == dispatch.AlgCallLoad {
				req.Method = "OPTIONS" // no load entry per iteration
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := r.Select(ctx, 1, alg, req, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("parallel-rr", func(b *testing.B) {
		r := newTestRegistry(b, threeGateways(), Options{})
		ctx := context.Background()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req := invite("x")
			for pb.Next() {
				if _, err := r.Select(ctx, 1, dispatch.AlgRoundRobin, req, 0); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// holdFirstEvent returns an Options.OnEvent that holds the actor inside the
// first event it emits (the actor calls OnEvent on its own goroutine while it
// applies a command): entered receives once the actor is held, and closing
// release lets it go on. Tests use it to fill a mailbox or outwait a caller
// deterministically; the clock cannot do it, as the load queue reads it too.
func holdFirstEvent() (onEvent func(dispatch.Event), entered, release chan struct{}) {
	entered, release = make(chan struct{}, 1), make(chan struct{})
	var first atomic.Bool
	onEvent = func(dispatch.Event) {
		if first.CompareAndSwap(false, true) {
			entered <- struct{}{}
			<-release
		}
	}
	return onEvent, entered, release
}

// waitUntil polls cond until it holds, failing the test after a deadline
// generous enough for a busy machine.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// waitLoads waits until r's load queue is empty.
func waitLoads(t testing.TB, r *Registry) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := r.WaitLoads(ctx); err != nil {
		t.Fatalf("load queue: %v (%+v)", err, r.LoadQueueStats())
	}
}
