package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testApp is a deterministic Applier: a counter per distinct command, the
// number of commands and a running hash of the command sequence (equal hashes
// on two nodes mean the same commands in the same order). Apply returns the
// command's new count.
type testApp struct {
	mu       sync.Mutex
	counts   map[string]int64
	n        uint64
	hash     uint64
	restores int
	gate     atomic.Pointer[chan struct{}] // when set, Apply waits for it to close
}

func newTestApp() *testApp { return &testApp{counts: make(map[string]int64)} }

func (a *testApp) Apply(index uint64, cmd []byte) any {
	if g := a.gate.Load(); g != nil {
		<-*g
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts[string(cmd)]++
	a.n++
	h := fnv.New64a()
	fmt.Fprintf(h, "%d:%s", a.hash, cmd)
	a.hash = h.Sum64()
	return a.counts[string(cmd)]
}

type appState struct {
	Counts map[string]int64
	N      uint64
	Hash   uint64
}

type appSnap struct{ s appState }

func (s appSnap) WriteTo(w io.Writer) (int64, error) {
	b, err := json.Marshal(s.s)
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}

func (s appSnap) Release() {}

func (a *testApp) Snapshot() (SnapshotWriter, error) { return appSnap{a.state()}, nil }

func (a *testApp) Restore(r io.Reader) error {
	var s appState
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return err
	}
	if s.Counts == nil {
		s.Counts = make(map[string]int64)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.counts, a.n, a.hash = s.Counts, s.N, s.Hash
	a.restores++
	return nil
}

func (a *testApp) state() appState {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := make(map[string]int64, len(a.counts))
	for k, v := range a.counts {
		c[k] = v
	}
	return appState{Counts: c, N: a.n, Hash: a.hash}
}

type tnode struct {
	*Node
	app *testApp
	cfg Config
	// bound addresses, remembered so that a restart reuses them
	gossipAddr, raftAddr string
}

var nextIP atomic.Uint32

// testIP returns a loopback address not used by earlier nodes of this test
// binary, so that every node has its own host.
func testIP() string {
	return fmt.Sprintf("127.0.0.%d", 10+nextIP.Add(1)%240)
}

func testLogger() *slog.Logger {
	if os.Getenv("CLUSTER_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func testConfig(t testing.TB, name string, expect int) Config {
	ip := testIP()
	c := LocalConfig()
	c.NodeName = name
	c.DataDir = t.TempDir()
	c.GossipBind = ip + ":0"
	c.RaftBind = ip + ":0"
	c.BootstrapExpect = expect
	c.RaftNoSync = os.Getenv("CLUSTER_NOSYNC") != ""
	return c
}

func startNode(t testing.TB, cfg Config) *tnode {
	t.Helper()
	app := newTestApp()
	n, err := New(cfg, app, testLogger())
	if err != nil {
		t.Fatalf("new %s: %v", cfg.NodeName, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", cfg.NodeName, err)
	}
	t.Cleanup(func() { n.Close() })
	return &tnode{Node: n, app: app, cfg: cfg, gossipAddr: n.GossipAddr(), raftAddr: n.RaftAddr()}
}

// restartNode starts a closed node again on the same data dir and addresses.
func restartNode(t testing.TB, old *tnode) *tnode {
	t.Helper()
	cfg := old.cfg
	cfg.GossipBind = old.gossipAddr
	cfg.RaftBind = old.raftAddr
	return startNode(t, cfg)
}

type tcluster struct {
	t     testing.TB
	nodes []*tnode
}

// newCluster starts n nodes (n0, n1, ...) with BootstrapExpect n, all joining
// n0, and waits until they form one raft cluster of n voters.
func newCluster(t testing.TB, n int, tweak func(*Config)) *tcluster {
	t.Helper()
	c := &tcluster{t: t}
	for i := range n {
		c.add(fmt.Sprintf("n%d", i), n, tweak)
	}
	c.waitVoters(n)
	return c
}

func (c *tcluster) add(name string, expect int, tweak func(*Config)) *tnode {
	c.t.Helper()
	cfg := testConfig(c.t, name, expect)
	if len(c.nodes) > 0 {
		cfg.Join = []string{c.nodes[0].GossipAddr()}
	}
	if tweak != nil {
		tweak(&cfg)
	}
	tn := startNode(c.t, cfg)
	c.nodes = append(c.nodes, tn)
	return tn
}

func (c *tcluster) leader() *tnode {
	for _, n := range c.nodes {
		if !n.isClosed() && n.IsLeader() {
			return n
		}
	}
	return nil
}

func (c *tcluster) live() []*tnode {
	var out []*tnode
	for _, n := range c.nodes {
		if !n.isClosed() {
			out = append(out, n)
		}
	}
	return out
}

func (c *tcluster) waitLeader() *tnode {
	c.t.Helper()
	var l *tnode
	waitFor(c.t, 15*time.Second, "a leader", func() error {
		if l = c.leader(); l == nil {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	return l
}

// waitVoters waits until the leader's configuration has want voters and every
// live node knows that leader.
func (c *tcluster) waitVoters(want int) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, fmt.Sprintf("%d voters", want), func() error {
		l := c.leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		st, err := l.Raft()
		if err != nil {
			return err
		}
		if v := countSuffrage(st, "Voter"); v != want {
			return fmt.Errorf("%d voters: %+v", v, st.Peers)
		}
		for _, n := range c.live() {
			if id, _ := n.Leader(); id != l.cfg.NodeName {
				return fmt.Errorf("%s sees leader %q", n.cfg.NodeName, id)
			}
		}
		return nil
	})
}

func countSuffrage(st RaftStatus, s string) int {
	c := 0
	for _, p := range st.Peers {
		if p.Suffrage == s {
			c++
		}
	}
	return c
}

func suffrageOf(st RaftStatus, id string) string {
	for _, p := range st.Peers {
		if p.ID == id {
			return p.Suffrage
		}
	}
	return ""
}

// waitConverged waits until every given node's applier holds the same state
// as the first one's and that state has want commands.
func waitConverged(t testing.TB, want uint64, nodes ...*tnode) {
	t.Helper()
	waitFor(t, 20*time.Second, "appliers to converge", func() error {
		ref := nodes[0].app.state()
		if ref.N != want {
			return fmt.Errorf("%s applied %d commands, want %d", nodes[0].cfg.NodeName, ref.N, want)
		}
		for _, n := range nodes[1:] {
			s := n.app.state()
			if s.N != ref.N || s.Hash != ref.Hash {
				return fmt.Errorf("%s: n=%d hash=%x, %s: n=%d hash=%x", n.cfg.NodeName, s.N, s.Hash,
					nodes[0].cfg.NodeName, ref.N, ref.Hash)
			}
		}
		return nil
	})
}

// waitFor polls cond until it returns nil or the deadline passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", timeout, what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func propose(t testing.TB, n *tnode, cmd string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := n.Propose(ctx, []byte(cmd))
	if err != nil {
		t.Fatalf("propose %q on %s: %v", cmd, n.cfg.NodeName, err)
	}
	v, ok := res.(int64)
	if !ok {
		t.Fatalf("propose %q on %s: result %T %v", cmd, n.cfg.NodeName, res, res)
	}
	return v
}

func errorsIs(err, target error) bool { return errors.Is(err, target) }
