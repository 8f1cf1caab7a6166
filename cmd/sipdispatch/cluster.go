package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/metrics"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// defaultGossipPort is memberlist's port, used for a join address without one.
const defaultGossipPort = "7946"

// clusterJoinTimeout bounds the first join attempt at start; later attempts
// run in the background.
const clusterJoinTimeout = 10 * time.Second

// pendingLoadFile, in node.data_dir, keeps the load commands this node has
// not committed yet (actors.Options.PendingFile).
const pendingLoadFile = "load-pending"

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
// production timings. The raft state lives in node.data_dir/raft. The raft
// TLS files are read here: the cluster package takes parsed certificates.
func (c *fileConfig) clusterNodeConfig() (cluster.Config, error) {
	cc := &c.Cluster
	cfg := cluster.DefaultConfig()
	cfg.NodeName = c.Node.Name
	cfg.DataDir = filepath.Join(c.Node.DataDir, "raft")
	cfg.GossipBind, cfg.GossipAdvertise = cc.Gossip.Bind, cc.Gossip.Advertise
	cfg.RaftBind, cfg.RaftAdvertise = cc.Raft.Bind, cc.Raft.Advertise
	cfg.BootstrapExpect = cc.Raft.BootstrapExpect
	cfg.DeadNodeReap = cc.DeadNodeReap
	cfg.SnapshotThreshold, cfg.SnapshotInterval = cc.Raft.SnapshotThreshold, cc.Raft.SnapshotInterval
	cfg.TrailingLogs = cc.Raft.TrailingLogs
	cfg.CommitTimeout = cc.Raft.CommitTimeout
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
	if t := cc.Raft.TLS; t.Cert != "" || t.Key != "" || t.CA != "" {
		tc, err := loadRaftTLS(t)
		if err != nil {
			return cluster.Config{}, fmt.Errorf("cluster.raft.tls: %w", err)
		}
		cfg.TLS = tc
	}
	return cfg, cfg.Validate()
}

// loadRaftTLS reads the node's PEM certificate and key and the CA bundle
// its peers' certificates must chain to.
func loadRaftTLS(t tlsConfig) (*cluster.TLSConfig, error) {
	if t.Cert == "" || t.Key == "" || t.CA == "" {
		return nil, errors.New("cert, key and ca are all required (mutual TLS)")
	}
	cert, err := tls.LoadX509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("cert %s, key %s: %w", t.Cert, t.Key, err)
	}
	pem, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ca %s: no PEM certificate in it", t.CA)
	}
	return &cluster.TLSConfig{Cert: cert, CA: pool}, nil
}

// standaloneNodeConfig is the node config without cluster.enabled: a
// one-node raft on local disk (node.data_dir/raft, fsync on) that opens no
// socket. The node name is its raft server ID, so it must stay the same
// across restarts of one data dir.
func (c *fileConfig) standaloneNodeConfig() (cluster.Config, error) {
	cfg := cluster.DefaultConfig()
	cfg.Standalone = true
	cfg.NodeName = c.Node.Name
	cfg.DataDir = filepath.Join(c.Node.DataDir, "raft")
	return cfg, cfg.Validate()
}

// standaloneSyncTimeout bounds how long a standalone node waits at start
// for its raft log to replay and its source's sets to commit.
const standaloneSyncTimeout = time.Minute

// startCluster builds the replicated registry and its raft node and starts
// the node: a cluster member with cluster.enabled, else a standalone node
// (one-node raft on local disk), so both run the same registry, proposer and
// applier. The registry starts empty: its sets come from the raft log, a
// snapshot, or the leader's source (source.Sources.Sync). Load-expiry sweeps run on the
// leader only, and so does leaderWork. A standalone node returns once its
// sets are committed; ctx bounds the first gossip join of a cluster member.
func startCluster(ctx context.Context, c *fileConfig, opts actors.Options, src *source.Sources, m *metrics.Metrics, log *slog.Logger, leaderWork ...func(context.Context)) (*actors.Registry, *cluster.Node, error) {
	standalone := !c.Cluster.Enabled
	var (
		ncfg cluster.Config
		err  error
	)
	if standalone {
		ncfg, err = c.standaloneNodeConfig()
	} else {
		ncfg, err = c.clusterNodeConfig()
	}
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
		p.commit = m.CommitObserver()
	}
	opts.Proposer = p
	reg, err := actors.NewRegistry(&c.Dispatcher.Config, nil, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to start set actors: %w", err)
	}
	app.reg = reg
	src.SetRegistry(reg)
	synced := make(chan struct{})
	var once sync.Once
	node.OnLeadership(func(ctx context.Context) {
		log.Info("cluster: this node is the leader", "standalone", standalone)
		if src.Sync(ctx, standalone) {
			once.Do(func() { close(synced) })
		}
	})
	if c.Dispatcher.HashSize > 0 {
		interval := time.Duration(c.Dispatcher.HashCheckInterval) * time.Second
		node.OnLeadership(func(ctx context.Context) { reg.RunExpiry(ctx, interval) })
	}
	for _, fn := range leaderWork {
		node.OnLeadership(fn)
	}
	if err := node.Start(ctx); err != nil {
		reg.Stop()
		return nil, nil, fmt.Errorf("failed to start the cluster node: %w", err)
	}
	if !standalone {
		log.Info("cluster node started", "name", ncfg.NodeName, "gossip", node.GossipAddr(),
			"raft", node.RaftAddr(), "join", ncfg.Join, "bootstrap_expect", ncfg.BootstrapExpect)
		go src.WarnDrift(node)
		return reg, node, nil
	}
	t := time.NewTimer(standaloneSyncTimeout)
	defer t.Stop()
	select {
	case <-synced:
	case <-t.C:
		if err := node.Close(); err != nil {
			log.Warn("standalone node close", "err", err)
		}
		reg.Stop()
		return nil, nil, fmt.Errorf("standalone node: the destination sets did not commit within %v", standaloneSyncTimeout)
	}
	log.Info("standalone node started", "name", ncfg.NodeName, "raft_dir", ncfg.DataDir)
	return reg, node, nil
}
