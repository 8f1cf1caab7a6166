package sip

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// gatedLog is a Proposer standing in for the cluster: it applies each
// command to the registry at once (a one-node log), or fails with fail while
// that is set, and can hold LoadAdds until release is closed. It records the
// kinds it committed, in order.
type gatedLog struct {
	mu      sync.Mutex
	reg     *actors.Registry
	fail    error
	hold    chan struct{} // non-nil: LoadAdds wait for it to close
	applied []string      // "kind callid"
}

func (g *gatedLog) Propose(ctx context.Context, c dispatch.Command) error {
	g.mu.Lock()
	fail, hold := g.fail, g.hold
	g.mu.Unlock()
	if fail != nil {
		return fail
	}
	if hold != nil && c.Kind == dispatch.CmdLoadAdd {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, err := g.reg.Apply(c); err != nil {
		return err
	}
	if c.CallID != "" {
		g.applied = append(g.applied, c.Kind.String()+" "+c.CallID)
	}
	return nil
}

func (g *gatedLog) set(fail error) { g.mu.Lock(); g.fail = fail; g.mu.Unlock() }

func (g *gatedLog) log() []string { g.mu.Lock(); defer g.mu.Unlock(); return slices.Clone(g.applied) }

// loadProxy runs the proxy in mode over a real registry of one set with gw,
// alg 10, whose state changes go through a gatedLog.
func loadProxy(t *testing.T, mode, replication string, gw *gateway) (*gatedLog, *actors.Registry, string) {
	t.Helper()
	cfg := dispatch.DefaultConfig()
	cfg.HashSize = 8
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	g := &gatedLog{}
	reg, err := actors.NewRegistry(&cfg, []dispatch.Set{{ID: 3, Dests: []dispatch.Destination{gw.dest(3)}}},
		actors.Options{Seed: 1, Logger: testLogger(), Proposer: g, LoadReplication: replication})
	if err != nil {
		t.Fatal(err)
	}
	g.reg = reg
	t.Cleanup(reg.Stop)
	pc := testConfig(mode)
	pc.RetryAfter = 7
	pc.FRTimer = 2 * time.Second
	_, proxy := startProxy(t, pc, reg, fixedRoutes{&Route{Name: "load", Dispatch: &Dispatch{Set: 3, Alg: dispatch.AlgCallLoad}}})
	return g, reg, proxy
}

func calls(t *testing.T, reg *actors.Registry) int {
	t.Helper()
	st, err := reg.Status(context.Background())
	if err != nil || len(st) != 1 {
		t.Fatalf("Status: %v %v", st, err)
	}
	return st[0].Calls
}

// The INVITE leaves only after its load entry committed; the 2xx confirms
// and the BYE removes it, in that order.
func TestLoadCommittedBeforeForward(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			g, reg, proxy := loadProxy(t, mode, actors.LoadCommitSync, gw)
			u := newUAC(t)
			ok, _ := u.call(t, proxy)
			id := ok.CallID().Value()
			if ds, _ := ok.RecordRoute().Address.UriParams.Get("ds"); ds != "3" {
				t.Fatalf("Record-Route %s: want ;ds=3", ok.RecordRoute().Value())
			}
			// The add first; the confirm and the removal after it, in either
			// order (a confirm after the removal finds nothing). The BYE
			// follows the 2xx at once, and a removal drops its call's confirm
			// while that still waits in the load queue (a busy machine), so
			// the confirm may be missing, never anything else.
			done := func(l []string) bool {
				if len(l) < 2 || l[0] != "load-add "+id || !slices.Contains(l[1:], "load-remove "+id) {
					return false
				}
				return len(l) == 2 || len(l) == 3 && slices.Contains(l[1:], "load-confirm "+id)
			}
			var l []string
			deadline := time.Now().Add(10 * time.Second)
			for l = g.log(); !done(l); l = g.log() {
				if time.Now().After(deadline) {
					t.Fatalf("committed %q; want the add of %s, then its removal and, unless the removal dropped it, its confirm", l, id)
				}
				time.Sleep(5 * time.Millisecond)
			}
			if n := calls(t, reg); n != 0 {
				t.Fatalf("%d entries after the BYE", n)
			}
		})
	}
}

// Without a quorum a sync INVITE gets 503 + Retry-After and never reaches the
// gateway; once the cluster commits again, the failed add leaves no entry
// even if it is then applied late.
func TestLoadCommitFailureLeavesNoEntry(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			g, reg, proxy := loadProxy(t, mode, actors.LoadCommitSync, gw)
			g.set(errors.New("no leader"))
			u := newUAC(t)
			inv := u.request(sipmsg.INVITE, proxy, nil)
			rs := u.final(t, inv)
			last := rs[len(rs)-1]
			if last.StatusCode != 503 {
				t.Fatalf("final %d, want 503", last.StatusCode)
			}
			if h := last.GetHeader("Retry-After"); h == nil || h.Value() != "7" {
				t.Fatalf("Retry-After %v, want 7", h)
			}
			if n := gw.invites.Load(); n != 0 {
				t.Fatalf("gateway got %d INVITEs after a failed commit", n)
			}
			g.set(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := reg.WaitLoads(ctx); err != nil {
				t.Fatal(err)
			}
			// The add a leader without quorum kept, committed after all.
			late := dispatch.Command{Kind: dispatch.CmdLoadAdd, At: time.Now().Add(-time.Second).UnixNano(), Set: 3,
				URI: gw.dest(3).URI, CallID: inv.CallID().Value()}
			if _, err := reg.Apply(late); !errors.Is(err, dispatch.ErrLoadRefused) {
				t.Fatalf("late add: %v, want refused", err)
			}
			if n := calls(t, reg); n != 0 {
				t.Fatalf("%d entries for a call answered 503", n)
			}
		})
	}
}

// load_replication async forwards without a quorum; the call's entry, if
// the add commits at all, is removed when the call ends, and confirms and
// removals issued while nothing commits are kept until it does.
func TestLoadAsyncForwardsWithoutQuorum(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			g, reg, proxy := loadProxy(t, mode, actors.LoadCommitAsync, gw)
			g.set(errors.New("no leader"))
			u := newUAC(t)
			ok, _ := u.call(t, proxy)
			if ok.StatusCode != 200 {
				t.Fatalf("INVITE answered %d without a quorum in async mode", ok.StatusCode)
			}
			if st := reg.LoadQueueStats(); st.Pending == 0 {
				t.Fatal("nothing pending while the cluster cannot commit")
			}
			g.set(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := reg.WaitLoads(ctx); err != nil {
				t.Fatal(err)
			}
			if n := calls(t, reg); n != 0 {
				t.Fatalf("%d entries after the call ended", n)
			}
		})
	}
}

// A BYE that carries no Route of ours (a UA that lost the route set) still
// ends the call's entry, by its Call-ID.
func TestByeWithoutRouteRemovesByCallID(t *testing.T) {
	gw := newGateway(t, "answer")
	g, reg, proxy := loadProxy(t, ModeStateful, actors.LoadCommitSync, gw)
	u := newUAC(t)
	inv := u.request(sipmsg.INVITE, proxy, nil)
	rs := u.final(t, inv)
	ok := rs[len(rs)-1]
	if ok.StatusCode != 200 || calls(t, reg) != 1 {
		t.Fatalf("INVITE answered %v with %d entries", codes(rs), calls(t, reg))
	}
	bye := inDialog(sipmsg.BYE, inv, ok, inv.CSeq().SeqNo+1)
	bye.RemoveHeader("Route")
	bye.SetDestination(proxy) // the R-URI is the gateway's Contact
	if r := u.final(t, bye); r[len(r)-1].StatusCode != 200 {
		t.Fatalf("BYE answered %v", codes(r))
	}
	waitFor(t, "entry removed by Call-ID", 10*time.Second, func() bool { return calls(t, reg) == 0 })
	// The removal is for any set (-1): the BYE did not say which.
	if l := g.log(); !slices.Contains(l, "load-remove "+inv.CallID().Value()) {
		t.Fatalf("log %v: want the call's removal", l)
	}
}

// Stateless mode reads UDP on one loop: while an alg-10 INVITE waits for its
// commit, other requests on the same socket are still answered.
func TestStatelessReaderDoesNotWaitForCommit(t *testing.T) {
	gw := newGateway(t, "answer")
	g, _, proxy := loadProxy(t, ModeStateless, actors.LoadCommitSync, gw)
	release := make(chan struct{})
	g.mu.Lock()
	g.hold = release
	g.mu.Unlock()
	u := newUAC(t)
	inv := u.request(sipmsg.INVITE, proxy, nil)
	if err := u.cli.WriteRequest(inv); err != nil {
		t.Fatal(err)
	}
	opt := u.request(sipmsg.OPTIONS, proxy, nil)
	host, port, err := sipmsg.ParseAddr(proxy)
	if err != nil {
		t.Fatal(err)
	}
	opt.Recipient = sipmsg.Uri{Scheme: "sip", Host: host, Port: port} // to the proxy itself
	if r := u.final(t, opt); r[len(r)-1].StatusCode != 200 {
		t.Fatalf("OPTIONS answered %v while an INVITE waited for its commit", codes(r))
	}
	if n := gw.invites.Load(); n != 0 {
		t.Fatalf("INVITE forwarded before its commit")
	}
	close(release)
	waitFor(t, "INVITE forwarded after the commit", 10*time.Second, func() bool { return gw.invites.Load() == 1 })
}
