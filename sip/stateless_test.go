package sip

import (
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Stateless CANCEL follows its INVITE to the same gateway with the same
// branch (RFC 3261 §16.11): the gateway matches it, answers 200, the INVITE
// ends 487, and the call's load entry goes.
func TestStatelessCancel(t *testing.T) {
	gw1, gw2 := newGateway(t, "ring"), newGateway(t, "ring")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw1.dest(1), gw2.dest(1)}})
	d.loadAdded = true
	_, proxy := startProxy(t, testConfig(ModeStateless), d, dispatchRoute(1))
	u := newUAC(t)
	inv, tx, callID := ringing(t, u, proxy)

	cancel := cancelFor(inv, proxy)
	if c := u.final(t, cancel); c[len(c)-1].StatusCode != 200 {
		t.Fatalf("CANCEL answered %v", codes(c))
	}
	if rs := collect(t, tx, 5*time.Second); rs[len(rs)-1].StatusCode != 487 {
		t.Fatalf("INVITE final %v, want 487", codes(rs))
	}
	if gw1.cancels.Load()+gw2.cancels.Load() != 1 || gw1.invites.Load()+gw2.invites.Load() != 1 {
		t.Fatalf("gateways got INVITEs %d/%d and CANCELs %d/%d; want one INVITE and its CANCEL",
			gw1.invites.Load(), gw2.invites.Load(), gw1.cancels.Load(), gw2.cancels.Load())
	}
	waitFor(t, "load removed", 10*time.Second, func() bool { return slices.Contains(d.snapshot(&d.removes), "1 "+callID) })
}

// A retransmitted INVITE goes where the first copy went, not where
// round-robin would send it now.
func TestStatelessRetransmissionSameGateway(t *testing.T) {
	gw1, gw2 := newGateway(t, "silent"), newGateway(t, "silent")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw1.dest(1), gw2.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateless), d, dispatchRoute(1))
	c, err := net.Dial("udp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	inv := fmt.Sprintf("INVITE sip:+15550100@pstn.example.net SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bKretrans1;rport\r\n"+
		"From: <sip:a@example.net>;tag=1\r\nTo: <sip:+15550100@pstn.example.net>\r\n"+
		"Call-ID: retrans-1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n", la)
	for i := range 3 {
		if _, err := c.Write([]byte(inv)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "copy "+itoa(i+1)+" at a gateway", 10*time.Second, func() bool {
			return int(gw1.invites.Load()+gw2.invites.Load()) == i+1
		})
	}
	if gw1.invites.Load() != 3 && gw2.invites.Load() != 3 {
		t.Fatalf("copies split %d/%d between gateways; all 3 must go to one", gw1.invites.Load(), gw2.invites.Load())
	}
}

// A forward the socket refuses (here an IPv6 gateway from the IPv4
// listener) is known only when the read loop's batch goes out: the caller
// still gets 503 and the call's load entry still goes, from the flush.
func TestStatelessForwardWriteFails(t *testing.T) {
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {{SetID: 1, URI: "sip:[::1]:5999", Scheme: "sip", Host: "::1", Port: 5999}}})
	d.loadAdded = true
	_, proxy := startProxy(t, testConfig(ModeStateless), d, dispatchRoute(1))
	c := newRawCaller(t, proxy)
	c.send(t, c.request("INVITE", "sip:+15550100@pstn.example.net", "unsendable-1", ""))
	raw := c.read(t, 5*time.Second)
	if !strings.HasPrefix(string(raw), "SIP/2.0 503 ") {
		t.Fatalf("caller got %q, want 503", raw)
	}
	waitFor(t, "load removed", 5*time.Second, func() bool { return slices.Contains(d.snapshot(&d.removes), "1 unsendable-1") })
}
