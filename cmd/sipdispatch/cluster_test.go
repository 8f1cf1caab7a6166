package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

func TestClusterNodeConfig(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "gossip.key")
	key := bytes.Repeat([]byte{7}, 16)
	if err := os.WriteFile(keyFile, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "n2", dir
	c.Cluster.Enabled = true
	c.Cluster.Gossip = gossipConfig{Bind: "127.0.0.2:7946", Join: []string{"127.0.0.1", "127.0.0.3:8000"}, EncryptKeyFile: keyFile}
	c.Cluster.Raft = raftConfig{Bind: "127.0.0.2:7947", Advertise: "10.0.0.2:7947", BootstrapExpect: 3,
		SnapshotThreshold: 100, SnapshotInterval: 3 * time.Second, TrailingLogs: 50, CommitTimeout: 3 * time.Millisecond}
	c.Cluster.DeadNodeReap = time.Hour
	got, err := c.clusterNodeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if got.NodeName != "n2" || got.DataDir != filepath.Join(dir, "raft") || got.GossipBind != "127.0.0.2:7946" ||
		got.RaftBind != "127.0.0.2:7947" || got.RaftAdvertise != "10.0.0.2:7947" || got.BootstrapExpect != 3 ||
		got.DeadNodeReap != time.Hour || !bytes.Equal(got.EncryptKey, key) ||
		got.SnapshotThreshold != 100 || got.SnapshotInterval != 3*time.Second || got.TrailingLogs != 50 || got.CommitTimeout != 3*time.Millisecond {
		t.Errorf("config %+v", got)
	}
	// The cluster package adds the default port to "127.0.0.1" (DefaultGossipPort).
	if want := []string{"127.0.0.1", "127.0.0.3:8000"}; strings.Join(got.Join, ",") != strings.Join(want, ",") {
		t.Errorf("join %v, want %v", got.Join, want)
	}

	for name, mod := range map[string]func(*fileConfig){
		"tls":          func(c *fileConfig) { c.Cluster.Raft.TLS = tlsConfig{Cert: "c.pem", Key: "k.pem"} },
		"bad key":      func(c *fileConfig) { c.Cluster.Gossip.EncryptKeyFile = filepath.Join(dir, "missing.key") },
		"no advertise": func(c *fileConfig) { c.Cluster.Gossip.Bind = "0.0.0.0:7946" },
		"no node name": func(c *fileConfig) { c.Node.Name = "" },
	} {
		bad := c
		bad.Cluster.Gossip.Join = append([]string(nil), c.Cluster.Gossip.Join...)
		mod(&bad)
		if _, err := bad.clusterNodeConfig(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func testDests(t *testing.T, uris ...string) []dispatch.Destination {
	t.Helper()
	var out []dispatch.Destination
	for _, u := range uris {
		d, err := dispatch.NewDestination(1, u, 0, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func flagsOf(t *testing.T, reg *actors.Registry) map[string]string {
	t.Helper()
	st, err := reg.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range st {
		for _, d := range s.Dests {
			out[d.URI] = d.State.Flags.Letters()
		}
	}
	return out
}

// A one-node cluster: the leader commits the source's sets, a mark goes
// through raft, and an Apply error comes back from Propose as the error.
func TestStartClusterOneNode(t *testing.T) {
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "solo", t.TempDir()
	c.Cluster.Enabled = true
	c.Cluster.Gossip = gossipConfig{Bind: "127.0.0.1:0"}
	c.Cluster.Raft.Bind, c.Cluster.Raft.BootstrapExpect = "127.0.0.1:0", 1
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	src := source.New(&c.Dispatcher.Config, testDests(t, "sip:a.example.com", "sip:b.example.com"), log)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, node, err := startCluster(ctx, &c, actors.Options{Logger: log}, src, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	defer node.Close()
	if len(reg.IDs()) != 0 && !node.IsLeader() {
		t.Fatal("sets installed before any leader committed them")
	}
	for len(flagsOf(t, reg)) != 2 {
		if ctx.Err() != nil {
			t.Fatal("the leader did not commit the source's sets")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !node.IsLeader() {
		t.Error("sets present but this single node is not the leader")
	}
	op, _ := dispatch.ParseMarkState("ip")
	if err := reg.Mark(ctx, 1, "sip:a.example.com", op); err != nil {
		t.Fatal(err)
	}
	if f := flagsOf(t, reg)["sip:a.example.com"]; !strings.HasPrefix(f, "I") {
		t.Errorf("after a committed mark: %s, want inactive", f)
	}
	err = replica.Proposer{Node: node}.Propose(ctx, dispatch.Command{Kind: dispatch.CmdMark, Set: 42, URI: "sip:a.example.com", Op: op})
	if !errors.Is(err, dispatch.ErrUnknownSet) {
		t.Errorf("mark of an unknown set: %v, want ErrUnknownSet from Apply", err)
	}
}
