package main

import (
	"context"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/testwait"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// cluster.load_replication is the registry's option with or without
// cluster.enabled (a standalone node runs the same replicated registry), and
// a cluster member accepts async.
func TestLoadReplicationConfig(t *testing.T) {
	def, err := loadConfig(writeConfig(t, "node:\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := def.Cluster.LoadReplication; got != actors.LoadCommitSync {
		t.Errorf("default load_replication %q, want sync", got)
	}
	c, err := loadConfig(writeConfig(t, "cluster:\n  load_replication: async\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	opts := actors.Options{LoadReplication: c.Cluster.LoadReplication}
	if err := opts.Validate(); err != nil {
		t.Errorf("registry options: %v", err)
	}
	c.Node.Name = "n1"
	c.Cluster.Enabled = true
	c.Cluster.Gossip = gossipConfig{Bind: "127.0.0.1:7946"}
	c.Cluster.Raft.Bind, c.Cluster.Raft.BootstrapExpect = "127.0.0.1:7947", 3
	if _, err := c.clusterNodeConfig(); err != nil {
		t.Errorf("cluster member with async: %v", err)
	}
}

// A standalone node (one-node raft on disk) commits an async LoadAdd in the
// background and ends it with the call's remove, even one issued at once.
func TestStandaloneAsyncLoadCommits(t *testing.T) {
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "solo", t.TempDir()
	c.Dispatcher.HashSize = 8
	c.Cluster.LoadReplication = "async"
	reg, _ := startTestNode(t, &c, &syncBuffer{}, testDests(t, "sip:a.example.com", "sip:b.example.com"))
	ctx := context.Background()
	req := &dispatch.Request{Method: "INVITE", CallID: "solo-1", RURI: "sip:1@x", From: "sip:a@x", To: "sip:b@x"}
	sel, err := reg.Select(ctx, 1, dispatch.AlgCallLoad, req, 0)
	if err != nil || !sel.LoadAdded {
		t.Fatalf("select: %v %+v", err, sel)
	}
	calls := func() int {
		st, err := reg.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st[0].Calls
	}
	// Issued at once, as a fast call's BYE would be: it waits for the add.
	reg.LoadRemove(-1, "solo-1")
	if _, err := reg.Select(ctx, 1, dispatch.AlgCallLoad, &dispatch.Request{Method: "INVITE", CallID: "solo-2"}, 0); err != nil {
		t.Fatal(err)
	}
	testwait.For(t, "solo-2 committed", 30*time.Second, func() bool { return calls() == 1 })
	reg.LoadRemove(-1, "solo-2")
	testwait.For(t, "no entry left", 30*time.Second, func() bool { return calls() == 0 })
}
