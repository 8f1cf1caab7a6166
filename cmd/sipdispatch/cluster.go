package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/metrics"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
)

// clusterJoinTimeout bounds the first join attempt at start; later attempts
// run in the background.
const clusterJoinTimeout = 10 * time.Second

// pendingLoadFile, in node.data_dir, keeps the load commands this node has
// not committed yet (actors.Options.PendingFile).
const pendingLoadFile = "load-pending"

// snapshotTimeout bounds how long a raft snapshot waits for the set actors.
const snapshotTimeout = 10 * time.Second

// clusterNodeConfig maps the file's cluster keys to the node's config, with
// production timings, reading the gossip key and the raft TLS files (the
// cluster package takes parsed keys and certificates). The raft state lives
// in node.data_dir/raft. Each error starts with its key, for lineOf.
func (c *fileConfig) clusterNodeConfig() (cluster.Config, error) {
	return c.nodeConfig(true)
}

// standaloneNodeConfig is the node config without cluster.enabled: a
// one-node raft on local disk (node.data_dir/raft, fsync on) that opens no
// socket. The node name is its raft server ID, so it must stay the same
// across restarts of one data dir.
func (c *fileConfig) standaloneNodeConfig() (cluster.Config, error) {
	return c.nodeConfig(false)
}

// nodeConfig maps the node and cluster keys onto cluster.Config and returns
// its Validate, which owns the checks of those keys. The mapping adds only
// what the file can get wrong and the cluster package cannot see: a 0 for a
// key whose 0 cluster.Config reads as "the default" or "never bootstrap"
// (the file writes its defaults out, so 0 there is a mistake), and the raft
// TLS trio of file names. load reads the gossip key and TLS files; without
// it (Validate) those are left out, so no file is opened.
func (c *fileConfig) nodeConfig(load bool) (cluster.Config, error) {
	cfg := cluster.DefaultConfig()
	cfg.NodeName = c.Node.Name
	cfg.DataDir = filepath.Join(c.Node.DataDir, "raft")
	if c.Node.DataDir == "" {
		cfg.DataDir = ""
	}
	if !c.Cluster.Enabled {
		cfg.Standalone = true
		return cfg, cfg.Validate()
	}
	cc := &c.Cluster
	cfg.GossipBind, cfg.GossipAdvertise = cc.Gossip.Bind, cc.Gossip.Advertise
	cfg.RaftBind, cfg.RaftAdvertise = cc.Raft.Bind, cc.Raft.Advertise
	cfg.Join = cc.Gossip.Join
	cfg.BootstrapExpect = cc.Raft.BootstrapExpect
	cfg.DeadNodeReap = cc.DeadNodeReap
	cfg.SnapshotThreshold, cfg.SnapshotInterval = cc.Raft.SnapshotThreshold, cc.Raft.SnapshotInterval
	cfg.TrailingLogs = cc.Raft.TrailingLogs
	cfg.CommitTimeout = cc.Raft.CommitTimeout

	var errs []error
	bad := func(key string, v any, why string) { errs = append(errs, fmt.Errorf("%s: %v: %s", key, v, why)) }
	def := cluster.DefaultConfig()
	for _, f := range []struct {
		key  string
		zero bool
		v    any
		why  string
	}{
		{"cluster.raft.bootstrap_expect", cc.Raft.BootstrapExpect == 0, 0, "must be >= 1"},
		{"cluster.raft.snapshot_threshold", cc.Raft.SnapshotThreshold == 0, 0, "must be >= 1"},
		{"cluster.raft.trailing_logs", cc.Raft.TrailingLogs == 0, 0, "must be >= 1"},
		{"cluster.raft.snapshot_interval", cc.Raft.SnapshotInterval == 0, "0s",
			fmt.Sprintf("must be >= %v (the default is %v)", cluster.MinSnapshotInterval, def.SnapshotInterval)},
		{"cluster.raft.commit_timeout", cc.Raft.CommitTimeout == 0, "0s",
			fmt.Sprintf("must be %v..%v (the default is %v)", cluster.MinCommitTimeout, cluster.MaxCommitTimeout, def.CommitTimeout)},
		{"cluster.dead_node_reap", cc.DeadNodeReap == 0, "0s", "must be > 0"},
	} {
		if f.zero {
			bad(f.key, f.v, f.why)
		}
	}
	t := cc.Raft.TLS
	tlsSet := t.Cert != "" || t.Key != "" || t.CA != ""
	if (t.Cert == "") != (t.Key == "") {
		bad("cluster.raft.tls.key", strconv.Quote(t.Key), "cert and key go together")
		tlsSet = false
	}
	if (t.CA == "") != (t.Cert == "") {
		bad("cluster.raft.tls.ca", strconv.Quote(t.CA), "cert, key and ca go together (mutual TLS verifies peers against ca)")
		tlsSet = false
	}
	if load && cc.Gossip.EncryptKeyFile != "" {
		key, err := cluster.LoadKeyFile(cc.Gossip.EncryptKeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster.gossip.encrypt_key_file: %w", err))
		}
		cfg.EncryptKey = key
	}
	if load && tlsSet {
		tc, err := loadRaftTLS(t)
		if err != nil {
			errs = append(errs, fmt.Errorf("cluster.raft.tls: %w", err))
		}
		cfg.TLS = tc
	}
	if err := cfg.Validate(); err != nil {
		errs = append(errs, unjoin(err)...)
	}
	if len(errs) > 0 {
		return cluster.Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// loadRaftTLS reads the node's PEM certificate and key and the CA bundle
// its peers' certificates must chain to; nodeConfig has checked that all
// three are named.
func loadRaftTLS(t tlsConfig) (*cluster.TLSConfig, error) {
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

// startCluster maps the file's node and cluster keys onto replica.Start: a
// cluster member with cluster.enabled, else a standalone node (one-node
// raft on local disk), so both run the same registry, proposer and
// applier. m may be nil (tests).
func startCluster(ctx context.Context, c *fileConfig, opts actors.Options, src *source.Sources, m *metrics.Metrics, log *slog.Logger, leaderWork ...func(context.Context)) (*actors.Registry, *cluster.Node, error) {
	var (
		ncfg cluster.Config
		err  error
	)
	if c.Cluster.Enabled {
		ncfg, err = c.clusterNodeConfig()
	} else {
		ncfg, err = c.standaloneNodeConfig()
	}
	if err != nil {
		return nil, nil, err
	}
	rc := replica.Config{Node: ncfg, Dispatcher: &c.Dispatcher.Config, Actors: opts, LeaderWork: leaderWork}
	if m != nil {
		rc.Commit = m.CommitObserver()
	}
	return replica.Start(ctx, rc, src, log)
}
