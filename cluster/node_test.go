package cluster

import (
	"slices"

	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"github.com/hashicorp/raft"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/vmihailenco/msgpack/v5"
)

func waitSoloLeader(t *testing.T, n *tnode) {
	t.Helper()
	waitFor(t, 10*time.Second, n.cfg.NodeName+" leader", func() error {
		if !n.IsLeader() {
			return fmt.Errorf("not leader")
		}
		return nil
	})
}

func TestProposeErrors(t *testing.T) {
	t.Run("not started", func(t *testing.T) {
		n, err := New(testConfig(t, "x", 1), newTestApp(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Propose(context.Background(), []byte("a")); !errors.Is(err, ErrNotStarted) {
			t.Fatalf("got %v, want ErrNotStarted", err)
		}
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("no leader", func(t *testing.T) {
		n := startNode(t, testConfig(t, "lonely", 0)) // never bootstraps
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := n.Propose(ctx, []byte("a"))
		if !errors.Is(err, ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want ErrNoLeader wrapping the deadline", err)
		}
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("gave up after %v, before the deadline", d)
		}
	})
	t.Run("too large, timeout, closed", func(t *testing.T) {
		cfg := testConfig(t, "solo", 1)
		cfg.MaxBatchBytes = 1024
		n := startNode(t, cfg)
		waitSoloLeader(t, n)
		if _, err := n.Propose(context.Background(), make([]byte, 1025)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("got %v, want ErrTooLarge", err)
		}
		// The FSM is stuck: the command commits but is not applied in time.
		gate := make(chan struct{})
		n.app.gate.Store(&gate)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		if _, err := n.Propose(ctx, []byte("slow")); !errors.Is(err, ErrTimeout) {
			t.Fatalf("got %v, want ErrTimeout", err)
		}
		close(gate)
		waitFor(t, 5*time.Second, "the slow command to apply", func() error {
			if got := n.app.state().Counts["slow"]; got != 1 {
				return fmt.Errorf("slow applied %d times", got)
			}
			return nil
		})
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Propose(context.Background(), []byte("a")); !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
		if err := n.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		n := startNode(t, testConfig(t, "lonely2", 0))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*time.Millisecond, cancel)
		if _, err := n.Propose(ctx, []byte("a")); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
	})
}

// Leader work starts after leadership is gained and its context ends when
// the node closes.
func TestOnLeadership(t *testing.T) {
	cfg := testConfig(t, "solo", 1)
	app := newTestApp()
	n, err := New(cfg, app, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan bool, 1)
	stopped := make(chan struct{})
	n.OnLeadership(func(ctx context.Context) {
		started <- n.IsLeader()
		<-ctx.Done()
		close(stopped)
	})
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case isLeader := <-started:
		if !isLeader {
			t.Fatal("leader work started on a non-leader")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("leader work never started")
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-stopped:
	default:
		t.Fatal("Close returned while leader work was still running")
	}
}

// Broadcasts reach the other members with the sender's name; malformed ones
// are counted, never delivered.
func TestBroadcast(t *testing.T) {
	c := &tcluster{t: t}
	type got struct{ from, payload string }
	var mu sync.Mutex
	received := map[string][]got{}
	for i := range 3 {
		name := fmt.Sprintf("g%d", i)
		cfg := testConfig(t, name, 0)
		if i > 0 {
			cfg.Join = []string{c.nodes[0].GossipAddr()}
		}
		app := newTestApp()
		n, err := New(cfg, app, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		n.OnMessage(func(from string, payload []byte) {
			mu.Lock()
			received[name] = append(received[name], got{from, string(payload)})
			mu.Unlock()
		})
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.Close() })
		c.nodes = append(c.nodes, &tnode{Node: n, app: app, cfg: cfg})
	}
	waitFor(t, 10*time.Second, "3 alive members", func() error {
		for _, n := range c.nodes {
			alive := 0
			for _, m := range n.Members() {
				if m.State == StateAlive && m.RaftID != "" {
					alive++
				}
			}
			if alive != 3 {
				return fmt.Errorf("%s sees %d alive", n.cfg.NodeName, alive)
			}
		}
		return nil
	})
	if err := c.nodes[0].Broadcast("gw:sip:10.0.0.1", []byte("up")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "broadcast delivery", func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, name := range []string{"g1", "g2"} {
			r := received[name]
			if len(r) == 0 {
				return fmt.Errorf("%s received nothing", name)
			}
			if r[0] != (got{"g0", "up"}) {
				return fmt.Errorf("%s received %+v", name, r[0])
			}
		}
		if len(received["g0"]) != 0 {
			return fmt.Errorf("sender received its own broadcast")
		}
		return nil
	})
	if err := c.nodes[0].Broadcast("big", make([]byte, 2000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized broadcast: %v, want ErrTooLarge", err)
	}
	before := c.nodes[1].Stats()
	delegate{c.nodes[1].Node}.NotifyMsg([]byte{gossipV1, 0xc1}) // 0xc1 is never valid msgpack
	waitFor(t, 5*time.Second, "malformed gossip counted", func() error {
		if s := c.nodes[1].Stats(); s.GossipBad != before.GossipBad+1 {
			return fmt.Errorf("GossipBad %d", s.GossipBad)
		}
		return nil
	})
}

// A newer broadcast with the same name replaces the queued older one.
func TestNamedBroadcastInvalidates(t *testing.T) {
	q := &memberlist.TransmitLimitedQueue{NumNodes: func() int { return 3 }, RetransmitMult: 3}
	q.QueueBroadcast(&namedBroadcast{name: "gw1", msg: []byte("down")})
	q.QueueBroadcast(&namedBroadcast{name: "gw2", msg: []byte("up")})
	q.QueueBroadcast(&namedBroadcast{name: "gw1", msg: []byte("up-again")})
	if got := q.NumQueued(); got != 2 {
		t.Fatalf("%d queued, want 2", got)
	}
	msgs := q.GetBroadcasts(0, 1000)
	var s []string
	for _, m := range msgs {
		s = append(s, string(m))
	}
	joined := strings.Join(s, ",")
	if strings.Contains(joined, "down") || !strings.Contains(joined, "up-again") {
		t.Fatalf("queue sends %q", joined)
	}
	if !(&namedBroadcast{name: "a"}).Invalidates(&namedBroadcast{name: "a"}) ||
		(&namedBroadcast{name: "a"}).Invalidates(&namedBroadcast{name: "b"}) {
		t.Fatal("Invalidates does not compare names")
	}
}

// The delegate never blocks: with the delivery queue full, messages are
// dropped and counted.
func TestNotifyMsgDropsWhenFull(t *testing.T) {
	cfg := testConfig(t, "x", 0)
	cfg.MessageQueue = 2
	n, err := New(cfg, newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	d := delegate{n}
	buf := []byte{1, 2, 3}
	for range 5 {
		d.NotifyMsg(buf)
	}
	buf[0] = 9
	if got := n.Stats().GossipDropped; got != 3 {
		t.Fatalf("dropped %d, want 3", got)
	}
	if first := <-n.msgCh; first[0] != 1 {
		t.Fatal("delegate kept memberlist's buffer instead of copying it")
	}
}

// Gossip is encrypted: a node with another key cannot join.
func TestEncryptedGossip(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 32)
	other := bytes.Repeat([]byte{8}, 32)
	mk := func(name string, k []byte) *tnode {
		cfg := testConfig(t, name, 0)
		cfg.EncryptKey = k
		cfg.TCPTimeout = 500 * time.Millisecond
		return startNode(t, cfg)
	}
	a := mk("ka", key)
	b := mk("kb", key)
	x := mk("kx", other)
	ctx := context.Background()
	if _, err := b.Join(ctx, []string{a.GossipAddr()}); err != nil {
		t.Fatalf("same key: %v", err)
	}
	if _, err := x.Join(ctx, []string{a.GossipAddr()}); err == nil {
		t.Fatal("a node with another key joined")
	}
	for _, m := range a.Members() {
		if m.Name == "kx" {
			t.Fatalf("kx listed as member: %+v", m)
		}
	}
}

// Garbage on the raft port is counted and the connection dropped; raft and
// forwarding keep working.
func TestRaftPortRejectsGarbage(t *testing.T) {
	n := startNode(t, testConfig(t, "solo", 1))
	waitSoloLeader(t, n)
	c, err := net.Dial("tcp", n.RaftAddr())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	c.Close()
	// A forwarding connection carrying a malformed frame.
	f, err := dialMux(nil, n.RaftAddr(), muxForward, time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := msgpack.NewEncoder(&b)
	enc.EncodeArrayLen(2) // a request has 5 fields
	enc.EncodeUint(1)
	enc.EncodeUint(1)
	f.Write(b.Bytes())
	waitFor(t, 5*time.Second, "bad frames counted", func() error {
		if got := n.Stats().BadRPC; got != 2 {
			return fmt.Errorf("BadRPC %d, want 2", got)
		}
		return nil
	})
	f.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := f.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection with a malformed frame stayed open")
	}
	f.Close()
	if got := propose(t, n, "still-works"); got != 1 {
		t.Fatalf("result %d", got)
	}
}

func TestConfigValidate(t *testing.T) {
	good := LocalConfig()
	good.NodeName, good.DataDir, good.GossipBind, good.RaftBind = "n1", t.TempDir(), "127.0.0.1:0", "127.0.0.1:0"
	if err := good.Validate(); err != nil {
		t.Fatalf("good config: %v", err)
	}
	if err := (Config{NodeName: "n", DataDir: "d", GossipBind: "127.0.0.1:7946", RaftBind: "127.0.0.1:8300"}).Validate(); err != nil {
		t.Fatalf("zero timings should take defaults: %v", err)
	}
	for name, tc := range map[string]struct {
		mut  func(*Config)
		want string
	}{
		"no name":          {func(c *Config) { c.NodeName = "" }, `node.name: "": must be one non-empty word`},
		"spaced name":      {func(c *Config) { c.NodeName = "a b" }, `node.name: "a b": must be one non-empty word`},
		"no dir":           {func(c *Config) { c.DataDir = "" }, `node.data_dir: "": required`},
		"bad bind":         {func(c *Config) { c.RaftBind = "nowhere" }, `cluster.raft.bind: "nowhere": want HOST:PORT`},
		"no host":          {func(c *Config) { c.RaftBind = ":7947" }, `cluster.raft.bind: ":7947": missing host`},
		"named port":       {func(c *Config) { c.RaftBind = "127.0.0.1:http" }, `cluster.raft.bind: "127.0.0.1:http": bad port "http"`},
		"advertise port 0": {func(c *Config) { c.RaftAdvertise = "10.0.0.1:0" }, `cluster.raft.advertise: "10.0.0.1:0": bad port "0"`},
		"wildcard":         {func(c *Config) { c.GossipBind = "0.0.0.0:7946" }, "cluster.gossip.bind: \"0.0.0.0:7946\": a wildcard address: set cluster.gossip.advertise"},
		"bad join":         {func(c *Config) { c.Join = []string{"10.0.0.1", "x y"} }, `cluster.gossip.join[1]: "x y": bad host "x y"`},
		"ipv6 join":        {func(c *Config) { c.Join = []string{"::1"} }, `cluster.gossip.join[0]: "::1": bad host (IPv6 addresses go in brackets`},
		"key size":         {func(c *Config) { c.EncryptKey = make([]byte, 10) }, "cluster.gossip.encrypt_key_file: 10-byte key: want 16, 24 or 32 bytes"},
		"expect > voters":  {func(c *Config) { c.BootstrapExpect = 7 }, "cluster.raft.bootstrap_expect: 7: above the 5 voters"},
		"expect negative":  {func(c *Config) { c.BootstrapExpect = -1 }, "cluster.raft.bootstrap_expect: -1: must not be negative"},
		"commit timeout":   {func(c *Config) { c.CommitTimeout = 2 * time.Second }, "cluster.raft.commit_timeout: 2s: must be 1ms..1s"},
		"commit too short": {func(c *Config) { c.CommitTimeout = time.Microsecond }, "cluster.raft.commit_timeout: 1µs: must be 1ms..1s"},
		"snapshot often":   {func(c *Config) { c.SnapshotInterval = time.Millisecond }, "cluster.raft.snapshot_interval: 1ms: must be >= 5ms"},
		"reap negative":    {func(c *Config) { c.DeadNodeReap = -time.Second }, "cluster.dead_node_reap: -1s: must be > 0"},
		"lease > hb":       {func(c *Config) { c.LeaderLeaseTimeout = time.Hour }, "LeaderLeaseTimeout: 1h0m0s: above HeartbeatTimeout"},
		"negative timeout": {func(c *Config) { c.ApplyTimeout = -1 }, "ApplyTimeout: -1ns: must not be negative"},
	} {
		c := good
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error containing %q", name, err, tc.want)
		}
	}
	if _, err := New(Config{}, newTestApp(), nil); err == nil {
		t.Fatal("New accepted an empty config")
	}
	joined := good
	joined.Join = []string{"10.0.0.1", "10.0.0.2:8000", "[::1]"}
	if err := joined.Validate(); err != nil {
		t.Fatalf("join without ports: %v", err)
	}
	if got, want := strings.Join(joined.withDefaults().Join, ","), "10.0.0.1:7946,10.0.0.2:8000,[::1]:7946"; got != want {
		t.Fatalf("join %s, want %s (DefaultGossipPort added)", got, want)
	}
	if joined.Join[0] != "10.0.0.1" {
		t.Fatal("withDefaults changed the caller's Join")
	}
}

func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key := bytes.Repeat([]byte{0xab}, 32)
	got, err := LoadKeyFile(write("good", base64.StdEncoding.EncodeToString(key)+"\n"))
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("good key: %x, %v", got, err)
	}
	if _, err := LoadKeyFile(write("short", base64.StdEncoding.EncodeToString(key[:10]))); err == nil {
		t.Fatal("10-byte key accepted")
	}
	if _, err := LoadKeyFile(write("garbage", "not base64!")); err == nil {
		t.Fatal("non-base64 key accepted")
	}
	if _, err := LoadKeyFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestKeepsQuorum(t *testing.T) {
	v := func(id string) raft.Server { return raft.Server{ID: raft.ServerID(id), Suffrage: raft.Voter} }
	nv := raft.Server{ID: "nv", Suffrage: raft.Nonvoter}
	for _, tc := range []struct {
		name    string
		servers []raft.Server
		dead    []string
		remove  raft.Server
		want    bool
	}{
		{"3 voters, 1 dead", []raft.Server{v("a"), v("b"), v("c")}, []string{"c"}, v("c"), true},
		{"3 voters, 2 dead", []raft.Server{v("a"), v("b"), v("c")}, []string{"b", "c"}, v("c"), false},
		{"5 voters, 2 dead", []raft.Server{v("a"), v("b"), v("c"), v("d"), v("e")}, []string{"d", "e"}, v("e"), true},
		{"4 voters, 2 dead", []raft.Server{v("a"), v("b"), v("c"), v("d")}, []string{"c", "d"}, v("d"), true},
		{"5 voters, 3 dead", []raft.Server{v("a"), v("b"), v("c"), v("d"), v("e")}, []string{"c", "d", "e"}, v("e"), false},
		{"non-voter", []raft.Server{v("a"), nv}, []string{"a", "nv"}, nv, true},
		{"last voter", []raft.Server{v("a")}, []string{"a"}, v("a"), false},
	} {
		alive := func(id raft.ServerID) bool { return !slices.Contains(tc.dead, string(id)) }
		if got := keepsQuorum(tc.servers, tc.remove, alive); got != tc.want {
			t.Errorf("%s: keepsQuorum = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A Start that fails late (gossip port taken, after raft is up) releases
// everything: the node is closed and its data dir can be opened again.
func TestStartFailureCleansUp(t *testing.T) {
	a := startNode(t, testConfig(t, "a", 0))
	cfg := testConfig(t, "b", 1)
	cfg.GossipBind = a.GossipAddr()
	n, err := New(cfg, newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "start gossip") {
		t.Fatalf("start on a taken gossip port: %v", err)
	}
	if _, err := n.Propose(context.Background(), []byte("x")); !errors.Is(err, ErrNotStarted) {
		t.Fatalf("propose after failed start: %v", err)
	}
	if err := n.Close(); err != nil {
		t.Fatalf("close after failed start: %v", err)
	}
	cfg.GossipBind = testIP() + ":0"
	again, err := New(cfg, newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { again.Close() })
	done := make(chan error, 1)
	go func() { done <- again.Start(context.Background()) }() // bolt blocks while the file is locked
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("restart on the same data dir: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("data dir still locked after a failed start")
	}
	waitSoloLeader(t, &tnode{Node: again, cfg: cfg})
}

// Two nodes on one data dir: the second fails at once instead of hanging on
// raft.db's lock.
func TestDataDirInUse(t *testing.T) {
	a := startNode(t, testConfig(t, "a", 1))
	cfg := testConfig(t, "a2", 1)
	cfg.DataDir = a.cfg.DataDir
	n, err := New(cfg, newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second node on the same data dir: %v", err)
	}
}
