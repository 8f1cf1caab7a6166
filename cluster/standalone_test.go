package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func standaloneConfig(t *testing.T, name, dir string) Config {
	c := LocalConfig()
	c.Standalone = true
	c.NodeName = name
	c.DataDir = dir
	return c
}

// openSockets counts this process's open sockets (Linux /proc).
func openSockets(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// A standalone node opens no socket, elects itself, keeps every committed
// command across a restart (replayed from the log) and runs leader work
// again after it.
func TestStandaloneRestartKeepsState(t *testing.T) {
	dir := t.TempDir()
	before := openSockets(t)
	cfg := standaloneConfig(t, "solo", dir)
	a := startNode(t, cfg)
	waitSoloLeader(t, a)
	if got := openSockets(t); got > before {
		t.Errorf("standalone node opened %d sockets", got-before)
	}
	for i := range 20 {
		propose(t, a, fmt.Sprintf("cmd-%d", i%3))
	}
	want := a.app.state()
	if want.N != 20 {
		t.Fatalf("applied %d commands, want 20", want.N)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}

	tb := restartSolo(t, cfg)
	if got := tb.app.state(); got.N != want.N || got.Hash != want.Hash {
		t.Fatalf("after restart: %+v, want %+v", got, want)
	}
	if tb.Stats().Bootstrapped {
		t.Error("restarted node bootstrapped again")
	}
	if got := propose(t, tb, "cmd-0"); got != want.Counts["cmd-0"]+1 {
		t.Fatalf("count after restart %d, want %d", got, want.Counts["cmd-0"]+1)
	}
}

// restartSolo starts a standalone node on an existing data dir and returns
// once its leader work runs, which is after a barrier: everything committed
// before is applied.
func restartSolo(t *testing.T, cfg Config) *tnode {
	t.Helper()
	app := newTestApp()
	b, err := New(cfg, app, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	led := make(chan struct{}, 1)
	b.OnLeadership(func(context.Context) {
		select {
		case led <- struct{}{}:
		default:
		}
	})
	if err := b.Start(context.Background()); err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	select {
	case <-led:
	case <-time.After(10 * time.Second):
		t.Fatal("leader work did not run after the restart")
	}
	return &tnode{Node: b, app: app, cfg: cfg}
}

// Members, Raft and Leader describe a one-node cluster; Join and Leave
// refuse, Broadcast sends nothing.
func TestStandaloneViews(t *testing.T) {
	n := startNode(t, standaloneConfig(t, "solo", t.TempDir()))
	waitSoloLeader(t, n)
	if !n.Stats().Bootstrapped {
		t.Error("fresh standalone node did not bootstrap")
	}
	ms := n.Members()
	if len(ms) != 1 || ms[0].Name != "solo" || ms[0].State != StateAlive || ms[0].RaftID != "solo" {
		t.Fatalf("members %+v, want solo alive", ms)
	}
	st, err := n.Raft()
	if err != nil {
		t.Fatal(err)
	}
	if st.State != "Leader" || st.LeaderID != "solo" || len(st.Peers) != 1 || st.Peers[0].Suffrage != "Voter" {
		t.Fatalf("raft status %+v", st)
	}
	if n.GossipAddr() != "" {
		t.Errorf("gossip address %q", n.GossipAddr())
	}
	if _, err := n.Join(context.Background(), []string{"127.0.0.1:1"}); !errors.Is(err, ErrStandalone) {
		t.Errorf("join: %v", err)
	}
	if err := n.Leave(context.Background()); !errors.Is(err, ErrStandalone) {
		t.Errorf("leave: %v", err)
	}
	if err := n.Broadcast("x", []byte("y")); err != nil {
		t.Errorf("broadcast: %v", err)
	}
	if got := propose(t, n, "still-works"); got != 1 {
		t.Fatalf("propose after Leave: %d", got)
	}
}

// A data dir holding another server's state is refused with a message that
// names it; a second process on the same data dir is refused by the lock.
func TestStandaloneForeignStateAndLock(t *testing.T) {
	dir := t.TempDir()
	a := startNode(t, standaloneConfig(t, "first", dir))
	waitSoloLeader(t, a)

	same, err := New(standaloneConfig(t, "first", dir), newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := same.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second node on the same data dir: %v", err)
	}
	a.Close()

	other, err := New(standaloneConfig(t, "second", dir), newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	err = other.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"first"`) || !strings.Contains(err.Error(), `"second"`) {
		t.Fatalf("start on another node's data dir: %v", err)
	}
}

func TestStandaloneValidate(t *testing.T) {
	c := standaloneConfig(t, "solo", t.TempDir())
	if err := c.Validate(); err != nil {
		t.Fatalf("standalone config: %v", err)
	}
	c.RaftBind = "127.0.0.1:0"
	c.Join = []string{"127.0.0.1:7946"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `cluster.raft.bind: "127.0.0.1:0": must be empty on a standalone node`) ||
		!strings.Contains(err.Error(), "cluster.gossip.join: [127.0.0.1:7946]: must be empty on a standalone node") {
		t.Fatalf("standalone with addresses: %v", err)
	}
}
