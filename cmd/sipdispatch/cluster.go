package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/metrics"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
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
