package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// defaultGossipPort is memberlist's port, used for a join address without one.
const defaultGossipPort = "7946"

// clusterJoinTimeout bounds the first join attempt at start; later attempts
// run in the background.
const clusterJoinTimeout = 10 * time.Second

// snapshotTimeout bounds how long a raft snapshot waits for the set actors.
const snapshotTimeout = 10 * time.Second

// proposer adapts a cluster node to actors.Proposer: commands travel the raft
// log encoded, and the result is the error of this node's own Apply.
type proposer struct {
	node *cluster.Node
	// commit observes each proposal's time to commit and local apply,
	// seconds; nil = not measured.
	commit prometheus.Observer
}

// Propose implements actors.Proposer.
func (p proposer) Propose(ctx context.Context, c dispatch.Command) error {
	b, err := dispatch.EncodeCommand(c)
	if err != nil {
		return fmt.Errorf("encode %s: %w", c.Kind, err)
	}
	start := time.Now()
	res, err := p.node.Propose(ctx, b)
	if p.commit != nil && err == nil {
		p.commit.Observe(time.Since(start).Seconds())
	}
	if errors.Is(err, cluster.ErrNoResult) {
		// Committed for sure; this node caught up by snapshot, which holds
		// the command's effect, so there is nothing more to wait for.
		return nil
	}
	if err != nil {
		return err
	}
	if e, ok := res.(error); ok {
		return e
	}
	return nil
}

// applier adapts the registry to cluster.Applier: it is the raft state
// machine of a node. reg is set before the node starts.
type applier struct{ reg *actors.Registry }

// Apply implements cluster.Applier. The result is the command's error (nil
// when it applied), which Propose hands back to the proposing caller.
func (a *applier) Apply(_ uint64, b []byte) any {
	c, err := dispatch.DecodeCommand(b)
	if err != nil {
		return fmt.Errorf("decode command: %w", err)
	}
	if _, err := a.reg.Apply(c); err != nil {
		return err
	}
	return nil
}

// Snapshot implements cluster.Applier. The registry encodes its state at
// once (the actors answer between two Apply calls), so the writer only
// copies bytes.
func (a *applier) Snapshot() (cluster.SnapshotWriter, error) {
	ctx, cancel := context.WithTimeout(context.Background(), snapshotTimeout)
	defer cancel()
	b, err := a.reg.Snapshot(ctx)
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return snapshotBytes(b), nil
}

// Restore implements cluster.Applier.
func (a *applier) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	return a.reg.Restore(b)
}

// snapshotBytes is an encoded registry snapshot as a cluster.SnapshotWriter.
type snapshotBytes []byte

// WriteTo implements io.WriterTo.
func (s snapshotBytes) WriteTo(w io.Writer) (int64, error) {
	return bytes.NewReader(s).WriteTo(w)
}

// Release implements cluster.SnapshotWriter; there is nothing to free.
func (snapshotBytes) Release() {}

// clusterNodeConfig maps the file's cluster keys to the node's config, with
// production timings. The raft state lives in node.data_dir/raft.
func (c *fileConfig) clusterNodeConfig() (cluster.Config, error) {
	cc := &c.Cluster
	if cc.Raft.TLS.Cert != "" {
		return cluster.Config{}, errors.New("cluster.raft.tls: TLS between nodes is not available in this build yet")
	}
	if cc.LoadReplication != "sync" {
		return cluster.Config{}, fmt.Errorf("cluster.load_replication %q: only sync is available in this build", cc.LoadReplication)
	}
	cfg := cluster.DefaultConfig()
	cfg.NodeName = c.Node.Name
	cfg.DataDir = filepath.Join(c.Node.DataDir, "raft")
	cfg.GossipBind, cfg.GossipAdvertise = cc.Gossip.Bind, cc.Gossip.Advertise
	cfg.RaftBind, cfg.RaftAdvertise = cc.Raft.Bind, cc.Raft.Advertise
	cfg.BootstrapExpect = cc.Raft.BootstrapExpect
	cfg.DeadNodeReap = cc.DeadNodeReap
	cfg.SnapshotThreshold, cfg.SnapshotInterval = cc.Raft.SnapshotThreshold, cc.Raft.SnapshotInterval
	cfg.TrailingLogs = cc.Raft.TrailingLogs
	for _, j := range cc.Gossip.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			j = net.JoinHostPort(j, defaultGossipPort)
		}
		cfg.Join = append(cfg.Join, j)
	}
	if cc.Gossip.EncryptKeyFile != "" {
		key, err := cluster.LoadKeyFile(cc.Gossip.EncryptKeyFile)
		if err != nil {
			return cluster.Config{}, fmt.Errorf("cluster.gossip.encrypt_key_file: %w", err)
		}
		cfg.EncryptKey = key
	}
	return cfg, cfg.Validate()
}

// startCluster builds the replicated registry and its cluster node and starts
// the node. The registry starts empty: its sets come from the raft log, a
// snapshot, or, on a brand-new cluster, from the first leader's source
// (seedSets). Load-expiry sweeps run on the leader only.
func startCluster(ctx context.Context, c *fileConfig, opts actors.Options, src *sources, m *metrics, log *slog.Logger) (*actors.Registry, *cluster.Node, error) {
	ncfg, err := c.clusterNodeConfig()
	if err != nil {
		return nil, nil, err
	}
	app := &applier{}
	node, err := cluster.New(ncfg, app, log.With("component", "cluster"))
	if err != nil {
		return nil, nil, err
	}
	p := proposer{node: node}
	if m != nil {
		p.commit = m.commit
	}
	opts.Proposer = p
	reg, err := actors.NewRegistry(&c.Dispatcher.Config, nil, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to start set actors: %w", err)
	}
	app.reg, src.reg = reg, reg
	node.OnLeadership(func(ctx context.Context) {
		log.Info("cluster: this node is the leader")
		src.seedSets(ctx)
	})
	if c.Dispatcher.HashSize > 0 {
		interval := time.Duration(c.Dispatcher.HashCheckInterval) * time.Second
		node.OnLeadership(func(ctx context.Context) { reg.RunExpiry(ctx, interval) })
	}
	if err := node.Start(ctx); err != nil {
		reg.Stop()
		return nil, nil, fmt.Errorf("failed to start the cluster node: %w", err)
	}
	log.Info("cluster node started", "name", ncfg.NodeName, "gossip", node.GossipAddr(),
		"raft", node.RaftAddr(), "join", ncfg.Join, "bootstrap_expect", ncfg.BootstrapExpect)
	return reg, node, nil
}

// seedSets runs on a new leader, after everything committed before has been
// applied: if the replicated state holds no set (a brand-new cluster), it
// commits the sets of this node's source, retrying until they commit or the
// leadership ends.
func (s *sources) seedSets(ctx context.Context) {
	const retry = time.Second
	for len(s.reg.IDs()) == 0 {
		s.mu.Lock()
		err := s.reg.Replace(ctx, dispatch.BuildSets(s.dests))
		s.mu.Unlock()
		if err == nil {
			s.log.Info("cluster: committed the initial sets", "destinations", len(s.dests), "source", s.c.sourceName())
			return
		}
		s.log.Warn("cluster: committing the initial sets failed; retrying", "err", err)
		t := time.NewTimer(retry)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
