package sip

import (
	"net"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Keepalives go to the destinations due; a live gateway is reported with its
// code and round trip, a dead one as a timeout. The per-destination
// ping_from attribute overrides ds_ping_from.
func TestProber(t *testing.T) {
	gw := newGateway(t, "answer")
	// A UDP port with nobody behind it.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadPort := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	dead := dispatch.Destination{SetID: 2, URI: "sip:127.0.0.1:" + itoa(deadPort), Scheme: "sip", Host: "127.0.0.1", Port: deadPort}
	live := gw.dest(1)
	live.Attrs.PingFrom = "sip:keepalive@lb.example.net"

	d := newFakeDispatcher(nil)
	d.targets = []actors.ProbeTarget{{SetID: 1, Dest: live}, {SetID: 2, Dest: dead}}
	cfg := testConfig(ModeStateful)
	cfg.PingInterval = 50 * time.Millisecond
	cfg.FRTimer = 300 * time.Millisecond
	startProxy(t, cfg, d, fixedRoutes{})

	var gotLive, gotDead probeReport
	waitFor(t, "a report for both destinations", 5*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, p := range d.probes {
			switch p.set {
			case 1:
				gotLive = p
			case 2:
				gotDead = p
			}
		}
		return gotLive.uri != "" && gotDead.uri != ""
	})
	if gotLive.uri != live.URI || gotLive.res.Code != 200 || gotLive.res.Timeout || gotLive.res.RTT <= 0 {
		t.Fatalf("live gateway report %+v, want %s code 200 with an RTT", gotLive, live.URI)
	}
	if gotDead.uri != dead.URI || !gotDead.res.Timeout || gotDead.res.Code != 0 {
		t.Fatalf("dead gateway report %+v, want %s timeout", gotDead, dead.URI)
	}
	if gw.options.Load() == 0 {
		t.Fatal("gateway saw no OPTIONS")
	}
	if from := gw.lastOptionsFrom(); from != "sip:keepalive@lb.example.net" {
		t.Fatalf("keepalive From %q, want the ping_from attribute", from)
	}
}
