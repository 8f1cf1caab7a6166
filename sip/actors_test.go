package sip

import (
	"context"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// The real set actors satisfy the interface the proxy consumes.
var _ Dispatcher = (*actors.Registry)(nil)

// One call through the proxy with the real actors: algorithm 10 with a
// failover list; the first gateway answers 503, is marked inactive, the call
// lands on the second, and the set's call-load entry lives exactly as long as
// the call.
func TestCallWithActors(t *testing.T) {
	bad, good := newGateway(t, "503"), newGateway(t, "answer")
	cfg := dispatch.DefaultConfig()
	cfg.HashSize = 8
	cfg.Flags = 2 // failover list
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	reg, err := actors.NewRegistry(&cfg, []dispatch.Set{{ID: 1, Dests: []dispatch.Destination{bad.dest(1), good.dest(1)}}}, actors.Options{Seed: 1, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	routes, err := NewRouter([]RouteConfig{{Name: "pstn", Dispatch: &DispatchConfig{
		Set: 1, Alg: int(dispatch.AlgCallLoad), Failover: FailoverConfig{On: []string{"5xx"}, Mark: "ip"},
	}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	_, proxy := startProxy(t, testConfig(ModeStateful), reg, routes)
	status := func() actors.SetStatus {
		st, err := reg.Status(context.Background())
		if err != nil || len(st) != 1 {
			t.Fatalf("Status: %v %v", st, err)
		}
		return st[0]
	}

	u := newUAC(t)
	inv := u.request(sipmsg.INVITE, proxy, nil)
	rs := u.final(t, inv)
	ok := rs[len(rs)-1]
	if ok.StatusCode != 200 || good.invites.Load() != 1 {
		t.Fatalf("INVITE answered %v, good gateway got %d INVITEs", codes(rs), good.invites.Load())
	}
	if n := status().Calls; n != 1 {
		t.Fatalf("%d call-load entries during the call, want 1", n)
	}
	waitFor(t, "bad gateway marked inactive", 10*time.Second, func() bool {
		return status().Dests[0].State.Flags&dispatch.FlagInactive != 0
	})
	if err := u.cli.WriteRequest(inDialog(sipmsg.ACK, inv, ok, inv.CSeq().SeqNo)); err != nil {
		t.Fatal(err)
	}
	if r := u.final(t, inDialog(sipmsg.BYE, inv, ok, inv.CSeq().SeqNo+1)); r[len(r)-1].StatusCode != 200 {
		t.Fatalf("BYE answered %v", codes(r))
	}
	waitFor(t, "call-load entry removed by the BYE", 10*time.Second, func() bool { return status().Calls == 0 })
}
