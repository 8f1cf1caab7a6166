package sip

import (
	"fmt"
	"slices"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// failoverRouter compiles one catch-all route to set with failover on 408
// and 5xx, marking failed destinations "ip", through the public Router API.
func failoverRouter(t *testing.T, set int) *Router {
	t.Helper()
	r, err := NewRouter([]RouteConfig{{
		Name:     "pstn",
		Dispatch: &DispatchConfig{Set: set, Alg: 4, Failover: FailoverConfig{On: []string{"408", "5xx"}, Mark: "ip"}},
	}}, set)
	if err != nil {
		t.Fatalf("NewRouter: %v", err)
	}
	return r
}

// markIP is the ds_mark_dst operation "ip" the route asks for.
func markIP(t *testing.T) dispatch.MarkOp {
	op, err := dispatch.ParseMarkState("ip")
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// A gateway answering 503 is marked and the call lands on the next one; the
// caller never sees the 503.
func TestFailoverOn503(t *testing.T) {
	routes := failoverRouter(t, 1)
	bad, good := newGateway(t, "503"), newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {bad.dest(1), good.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateful), d, routes)
	u := newUAC(t)
	_, wire := u.call(t, proxy)
	if slices.Contains(wire, 503) {
		t.Fatalf("caller saw %v; the 503 must stay at the proxy", wire)
	}
	if bad.invites.Load() != 1 || good.invites.Load() != 1 {
		t.Fatalf("INVITEs: failing gateway %d, next gateway %d; want 1 and 1", bad.invites.Load(), good.invites.Load())
	}
	waitFor(t, "Mark of the failing gateway", 10*time.Second, func() bool {
		return slices.Equal(d.snapshot(&d.marks), []string{fmt.Sprintf("1 %s %+v", bad.dest(1).URI, markIP(t))})
	})
}

// A gateway that never answers is given up after fr_timer (408) and the call
// goes to the next gateway.
func TestFailoverOnTimeout(t *testing.T) {
	routes := failoverRouter(t, 1)
	silent, good := newGateway(t, "silent"), newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {silent.dest(1), good.dest(1)}})
	cfg := testConfig(ModeStateful)
	cfg.FRTimer = 300 * time.Millisecond
	_, proxy := startProxy(t, cfg, d, routes)
	u := newUAC(t)
	start := time.Now()
	u.call(t, proxy)
	if took := time.Since(start); took < cfg.FRTimer {
		t.Fatalf("call took %s, less than fr_timer %s: the silent gateway was not waited for", took, cfg.FRTimer)
	}
	if silent.invites.Load() == 0 || good.invites.Load() != 1 {
		t.Fatalf("INVITEs: silent %d, next %d", silent.invites.Load(), good.invites.Load())
	}
	waitFor(t, "Mark of the silent gateway", 10*time.Second, func() bool {
		return slices.Equal(d.snapshot(&d.marks), []string{fmt.Sprintf("1 %s %+v", silent.dest(1).URI, markIP(t))})
	})
}

// Without failover a gateway's 503 reaches the caller as 500 with the
// gateway's reason (RFC 3261 §16.7 step 6, as Kamailio's tm) and nothing is
// marked.
func TestNoFailoverRelays503As500(t *testing.T) {
	bad, good := newGateway(t, "503"), newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {bad.dest(1), good.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateful), d, dispatchRoute(1))
	u := newUAC(t)
	rs := u.final(t, u.request(sipmsg.INVITE, proxy, nil))
	if last := rs[len(rs)-1]; last.StatusCode != 500 || last.Reason != "Service Unavailable" {
		t.Fatalf("final %d %s, want the gateway's 503 as 500 Service Unavailable", last.StatusCode, last.Reason)
	}
	if good.invites.Load() != 0 {
		t.Fatalf("next gateway got %d INVITEs without failover", good.invites.Load())
	}
}

// CANCEL of a ringing call: the caller gets 200 for the CANCEL and 487, the
// gateway gets a CANCEL, and the call's load entry is removed.
func TestCancelRingingCall(t *testing.T) {
	gw := newGateway(t, "ring")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
	d.loadAdded = true
	s, proxy := startProxy(t, testConfig(ModeStateful), d, dispatchRoute(1))
	u := newUAC(t)
	inv, tx, callID := ringing(t, u, proxy)

	cancel := cancelFor(inv, proxy)
	cres := u.final(t, cancel)
	if c := cres[len(cres)-1].StatusCode; c != 200 {
		t.Fatalf("CANCEL answered %d, want 200", c)
	}
	rs := collect(t, tx, 5*time.Second)
	if c := rs[len(rs)-1].StatusCode; c != 487 {
		t.Fatalf("INVITE final %d, want 487", c)
	}
	waitFor(t, "CANCEL at the gateway", 10*time.Second, func() bool { return gw.cancels.Load() == 1 })
	// The gateway's 200 (one Via: the CANCEL's) reaches our CANCEL's client
	// transaction, which then ends after Timer K (T4, 500 ms here), not
	// retransmitting until Timer F (6.4 s); the INVITE's stays for Timer D.
	waitFor(t, "the CANCEL's transaction to take its 200", 4*time.Second, func() bool {
		_, c := s.txl.Len()
		return c == 1
	})
	waitFor(t, "load removed", 10*time.Second, func() bool {
		return slices.Equal(d.snapshot(&d.removes), []string{"1 " + callID})
	})
	if c := d.snapshot(&d.confirms); len(c) != 0 {
		t.Fatalf("cancelled call confirmed: %v", c)
	}
}

// With algorithm 10 the call's load follows the failover to the gateway that
// now carries it, and only for calls that recorded load.
func TestFailoverMovesCallLoad(t *testing.T) {
	routes := failoverRouter(t, 1)
	bad, good := newGateway(t, "503"), newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {bad.dest(1), good.dest(1)}})
	d.loadAdded = true
	_, proxy := startProxy(t, testConfig(ModeStateful), d, routes)
	u := newUAC(t)
	res, _ := u.call(t, proxy)
	want := []string{fmt.Sprintf("1 %s %s", res.CallID().Value(), good.dest(1).URI)}
	waitFor(t, "LoadMove to the next gateway", 10*time.Second, func() bool {
		return slices.Equal(d.snapshot(&d.moves), want)
	})
}
