package main

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/testwait"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// syncBuffer is a log sink safe for the node's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startTestNode runs startCluster on c with dests as the source and stops
// the node and registry at the end of the test (or earlier, by stop).
func startTestNode(t *testing.T, c *fileConfig, logs *syncBuffer, dests []dispatch.Destination) (reg *actors.Registry, stop func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(logs, nil))
	src := source.New(&c.Dispatcher.Config, dests, log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, node, err := startCluster(ctx, c, actors.Options{Logger: log}, src, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			if err := node.Close(); err != nil {
				t.Errorf("close: %v", err)
			}
			reg.Stop()
		})
	}
	t.Cleanup(stop)
	return reg, stop
}

// Without cluster.enabled: the sets are committed before startCluster
// returns, state survives a restart, an unchanged source changes nothing,
// and a source with one more destination is committed as a reload that
// keeps the old destinations' state.
func TestStandaloneRestartKeepsStateAndSyncsSource(t *testing.T) {
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "solo", t.TempDir()
	logs := &syncBuffer{}
	ab := testDests(t, "sip:a.example.com", "sip:b.example.com")

	reg, stop := startTestNode(t, &c, logs, ab)
	if got := flagsOf(t, reg); len(got) != 2 {
		t.Fatalf("sets after start: %v, want a and b committed before startCluster returns", got)
	}
	op, _ := dispatch.ParseMarkState("ip")
	if err := reg.Mark(context.Background(), 1, "sip:b.example.com", op); err != nil {
		t.Fatal(err)
	}
	stop()

	reg, stop = startTestNode(t, &c, logs, ab)
	if f := flagsOf(t, reg); len(f) != 2 || !strings.HasPrefix(f["sip:b.example.com"], "I") || !strings.HasPrefix(f["sip:a.example.com"], "A") {
		t.Fatalf("after restart: %v, want b inactive, a active", f)
	}
	if !strings.Contains(logs.String(), "the committed sets match the source") {
		t.Errorf("unchanged source not reported as matching:\n%s", logs.String())
	}
	stop()

	abc := append(ab, testDests(t, "sip:c.example.com")...)
	reg, _ = startTestNode(t, &c, logs, abc)
	f := flagsOf(t, reg)
	if len(f) != 3 || !strings.HasPrefix(f["sip:b.example.com"], "I") || !strings.HasPrefix(f["sip:c.example.com"], "A") {
		t.Fatalf("after restart with c added: %v, want c added and b still inactive", f)
	}
	if !strings.Contains(logs.String(), "committed it as a reload") || !strings.Contains(logs.String(), "differences=1") {
		t.Errorf("source change not logged:\n%s", logs.String())
	}
}

// With cluster.enabled a node whose source differs from the replicated sets
// warns and keeps the cluster's sets.
func TestClusterSourceDriftOnlyWarns(t *testing.T) {
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "solo", t.TempDir()
	c.Cluster.Enabled = true
	c.Cluster.Gossip = gossipConfig{Bind: "127.0.0.1:0"}
	c.Cluster.Raft.Bind, c.Cluster.Raft.BootstrapExpect = "127.0.0.1:0", 1
	logs := &syncBuffer{}
	ab := testDests(t, "sip:a.example.com", "sip:b.example.com")
	reg, stop := startTestNode(t, &c, logs, ab)
	testwait.For(t, "the initial sets", 30*time.Second, func() bool { return len(flagsOf(t, reg)) == 2 })
	stop()

	reg, _ = startTestNode(t, &c, logs, append(ab, testDests(t, "sip:c.example.com")...))
	testwait.For(t, "the drift warning", 30*time.Second, func() bool { return strings.Contains(logs.String(), "differs from the replicated sets") })
	if !strings.Contains(logs.String(), "differences=1") || !strings.Contains(logs.String(), "sipdispatch reload") {
		t.Errorf("warning without the count or the hint:\n%s", logs.String())
	}
	if f := flagsOf(t, reg); len(f) != 2 {
		t.Errorf("cluster sets %v replaced by one node's source", f)
	}
}
