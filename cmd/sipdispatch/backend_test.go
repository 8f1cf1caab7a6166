package main

import (
	"context"
	"log/slog"
	"testing"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

var discardLog = slog.New(slog.DiscardHandler)

type fakeLeader struct{ id string }

func (f *fakeLeader) Leader() (string, string) { return f.id, "" }

// nodeBackend routes ping_active to the keepalive gate and decides
// readiness from the raft leader and, in a cluster, the replicated sets.
func TestNodeBackend(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	reg, err := actors.NewRegistry(&cfg, dispatch.BuildSets(testDests(t, "sip:10.0.2.1")), actors.Options{Seed: 1, Logger: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	gate := &replica.ProbeGate{Registry: reg}
	leader := &fakeLeader{}
	b := &nodeBackend{Registry: reg, cfg: &cfg, gate: gate, node: leader, clustered: true}
	if got := b.PingActive(); got != 1 {
		t.Errorf("PingActive at start = %d, want 1", got)
	}
	if old := b.SetPingActive(0); old != 1 || b.PingActive() != 0 || gate.PingActive() != 0 {
		t.Errorf("SetPingActive(0) = %d, now %d (gate %d)", old, b.PingActive(), gate.PingActive())
	}
	if old := b.SetPingActive(1); old != 0 || b.PingActive() != 1 {
		t.Errorf("SetPingActive(1) = %d, now %d", old, b.PingActive())
	}
	if b.Config() != &cfg {
		t.Error("Config is not the registry's")
	}
	if err := b.Ready(); err == nil {
		t.Error("ready without a leader")
	}
	leader.id = "n1"
	if err := b.Ready(); err != nil {
		t.Errorf("Ready with a leader and sets: %v", err)
	}
	if err := reg.Replace(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Ready(); err == nil {
		t.Error("a cluster member without replicated sets is ready")
	}
	b.clustered = false
	if err := b.Ready(); err != nil {
		t.Errorf("a standalone node with an empty source: %v", err)
	}
}
