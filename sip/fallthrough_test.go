package sip

import (
	"context"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// TestRouteFallThrough is Kamailio's `if (!ds_select_dst(1, 4))
// ds_select_dst(2, 4)` with the real set actors over UDP: set 1's only
// gateway is inactive, so a route with on_empty: next passes the call to the
// next matching route (set 2), skipping a route that does not match; once
// set 1 is active again it takes the calls. Without on_empty, or with no
// route after it, the caller gets 503.
func TestRouteFallThrough(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			primary, backup, other := newGateway(t, "answer"), newGateway(t, "answer"), newGateway(t, "answer")
			cfg := dispatch.DefaultConfig()
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			p := primary.dest(1)
			p.Flags = dispatch.FlagInactive
			reg, err := actors.NewRegistry(&cfg, []dispatch.Set{
				{ID: 1, Dests: []dispatch.Destination{p}},
				{ID: 2, Dests: []dispatch.Destination{backup.dest(2)}},
				{ID: 3, Dests: []dispatch.Destination{other.dest(3)}},
			}, actors.Options{Seed: 1, Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(reg.Stop)
			rr := int(dispatch.AlgRoundRobin)
			routes, err := NewRouter([]RouteConfig{
				{Name: "primary", Match: MatchConfig{Methods: []string{"INVITE"}}, Dispatch: &DispatchConfig{Set: 1, Alg: rr, OnEmpty: "next"}},
				{Name: "messages", Match: MatchConfig{Methods: []string{"MESSAGE"}}, Dispatch: &DispatchConfig{Set: 3, Alg: rr}},
				{Name: "backup", Dispatch: &DispatchConfig{Set: 2, Alg: rr}},
			}, 1)
			if err != nil {
				t.Fatal(err)
			}
			_, proxy := startProxy(t, testConfig(mode), reg, routes)
			u := newUAC(t)
			u.call(t, proxy)
			if primary.invites.Load() != 0 || backup.invites.Load() != 1 || other.invites.Load() != 0 {
				t.Fatalf("INVITEs primary %d backup %d other %d, want 0 1 0",
					primary.invites.Load(), backup.invites.Load(), other.invites.Load())
			}

			op, err := dispatch.ParseMarkState("a")
			if err != nil {
				t.Fatal(err)
			}
			op.Direct = true
			if err := reg.Mark(context.Background(), 1, p.URI, op); err != nil {
				t.Fatal(err)
			}
			u.call(t, proxy)
			if primary.invites.Load() != 1 || backup.invites.Load() != 1 {
				t.Fatalf("after set 1 came back: INVITEs primary %d backup %d, want 1 1", primary.invites.Load(), backup.invites.Load())
			}
		})
	}
}

// TestRouteFallThroughEnd: without on_empty, or with nothing matching after
// the route, an empty set still answers 503.
func TestRouteFallThroughEnd(t *testing.T) {
	gw := newGateway(t, "answer")
	cfg := dispatch.DefaultConfig()
	p := gw.dest(1)
	p.Flags = dispatch.FlagInactive
	reg, err := actors.NewRegistry(&cfg, []dispatch.Set{{ID: 1, Dests: []dispatch.Destination{p}}, {ID: 2, Dests: []dispatch.Destination{gw.dest(2)}}},
		actors.Options{Seed: 1, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	rr := int(dispatch.AlgRoundRobin)
	for _, tc := range []struct {
		name   string
		routes []RouteConfig
	}{
		{"no on_empty", []RouteConfig{{Dispatch: &DispatchConfig{Set: 1, Alg: rr}}, {Dispatch: &DispatchConfig{Set: 2, Alg: rr}}}},
		{"nothing after", []RouteConfig{{Dispatch: &DispatchConfig{Set: 1, Alg: rr, OnEmpty: "next"}},
			{Match: MatchConfig{Methods: []string{"MESSAGE"}}, Dispatch: &DispatchConfig{Set: 2, Alg: rr}}}},
	} {
		routes, err := NewRouter(tc.routes, 1)
		if err != nil {
			t.Fatal(err)
		}
		_, proxy := startProxy(t, testConfig(ModeStateful), reg, routes)
		u := newUAC(t)
		rs := u.final(t, u.request(sipmsg.INVITE, proxy, nil))
		if c := rs[len(rs)-1].StatusCode; c != 503 {
			t.Errorf("%s: INVITE answered %v, want 503", tc.name, codes(rs))
		}
	}
	if gw.invites.Load() != 0 {
		t.Errorf("gateway got %d INVITEs, want 0", gw.invites.Load())
	}
	if _, err := NewRouter([]RouteConfig{{Dispatch: &DispatchConfig{Set: 1, OnEmpty: "later"}}}, 1); err == nil {
		t.Error(`on_empty: "later" accepted`)
	}
}
