package sip

import (
	"fmt"
	"slices"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// parallelRouter compiles one catch-all route to set with algorithm 12,
// marking "ip" on 5xx and timeouts.
func parallelRouter(t *testing.T, set int) *Router {
	t.Helper()
	r, err := NewRouter([]RouteConfig{{
		Name:     "fork",
		Dispatch: &DispatchConfig{Set: set, Alg: int(dispatch.AlgParallel), Failover: FailoverConfig{On: []string{"408", "5xx"}, Mark: "ip"}},
	}}, set)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	return r
}

// Algorithm 12 rings every gateway at once: the one that answers wins, the
// ringing ones get a CANCEL, and the caller sees a single 200. Serially the
// first ringing gateway would hold the call until its timer.
func TestParallelForkFirst2xxWins(t *testing.T) {
	ring1, ring2, answer := newGateway(t, "ring"), newGateway(t, "ring"), newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {ring1.dest(1), ring2.dest(1), answer.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateful), d, parallelRouter(t, 1))
	u := newUAC(t)
	res, wire := u.call(t, proxy)
	if res.StatusCode != 200 || slices.Contains(wire, 487) {
		t.Fatalf("caller saw %v, want ringing then one 200", wire)
	}
	// The branches leave at once, so the answering gateway's 200 can reach
	// the caller before the other INVITEs have arrived.
	waitFor(t, "one INVITE at every gateway", 10*time.Second, func() bool {
		return ring1.invites.Load() == 1 && ring2.invites.Load() == 1 && answer.invites.Load() == 1
	})
	waitFor(t, "CANCEL at both ringing gateways", 10*time.Second, func() bool {
		return ring1.cancels.Load() == 1 && ring2.cancels.Load() == 1
	})
	if m := d.snapshot(&d.marks); len(m) != 0 {
		t.Errorf("marks %v: a branch cancelled because another won must not be marked", m)
	}
}

// When no branch answers 2xx the caller gets the best final reply (RFC 3261
// §16.7 step 6): the lowest class, a 6xx over anything; failed branches are
// marked, a 6xx branch is not.
func TestParallelForkBestFinal(t *testing.T) {
	cases := []struct {
		modes []string
		want  int
		marks int
	}{
		{[]string{"503", "486", "500"}, 486, 2},
		{[]string{"503", "603", "ring"}, 603, 1},
		{[]string{"503", "500"}, 500, 2}, // the 503 is chosen and goes upstream as 500
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.modes), func(t *testing.T) {
			var gws []*gateway
			var dests []dispatch.Destination
			for _, m := range tc.modes {
				g := newGateway(t, m)
				gws = append(gws, g)
				dests = append(dests, g.dest(1))
			}
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: dests})
			_, proxy := startProxy(t, testConfig(ModeStateful), d, parallelRouter(t, 1))
			u := newUAC(t)
			rs := u.final(t, u.request(sipmsg.INVITE, proxy, nil))
			if c := rs[len(rs)-1].StatusCode; c != tc.want {
				t.Fatalf("final %v, want %d", codes(rs), tc.want)
			}
			for i, g := range gws {
				if n := g.invites.Load(); n != 1 {
					t.Errorf("gateway %d (%s) got %d INVITEs, want 1", i+1, tc.modes[i], n)
				}
				if tc.modes[i] == "ring" {
					waitFor(t, "CANCEL of the ringing branch after the 6xx", 10*time.Second, func() bool { return g.cancels.Load() == 1 })
				}
			}
			waitFor(t, "marks of the failed branches", 10*time.Second, func() bool { return len(d.snapshot(&d.marks)) == tc.marks })
		})
	}
}

// The caller's CANCEL reaches every ringing branch; the caller gets 487.
func TestParallelForkCancel(t *testing.T) {
	ring1, ring2 := newGateway(t, "ring"), newGateway(t, "ring")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {ring1.dest(1), ring2.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateful), d, parallelRouter(t, 1))
	u := newUAC(t)
	inv, tx, _ := ringing(t, u, proxy)
	waitFor(t, "INVITE at both gateways", 10*time.Second, func() bool {
		return ring1.invites.Load() == 1 && ring2.invites.Load() == 1
	})
	cres := u.final(t, cancelFor(inv, proxy))
	if c := cres[len(cres)-1].StatusCode; c != 200 {
		t.Fatalf("CANCEL answered %d, want 200", c)
	}
	rs := collect(t, tx, 5*time.Second)
	if c := rs[len(rs)-1].StatusCode; c != 487 {
		t.Fatalf("INVITE final %d, want 487", c)
	}
	waitFor(t, "CANCEL at both gateways", 10*time.Second, func() bool {
		return ring1.cancels.Load() == 1 && ring2.cancels.Load() == 1
	})
	if m := d.snapshot(&d.marks); len(m) != 0 {
		t.Errorf("marks %v after the caller's CANCEL", m)
	}
}

func TestBestFinal(t *testing.T) {
	o := func(codes ...int) []outcome {
		var out []outcome
		for _, c := range codes {
			out = append(out, outcome{code: c})
		}
		return out
	}
	cases := []struct {
		in   []outcome
		want int
	}{
		{nil, 503},
		{o(408), 408},
		{o(503, 486, 404), 486},
		{o(500, 302, 404), 302},
		{o(486, 603, 302), 603},
		{o(600, 603), 600},
		{o(408, 503), 408},
	}
	for _, tc := range cases {
		if got := bestFinal(tc.in).code; got != tc.want {
			t.Errorf("bestFinal(%v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
