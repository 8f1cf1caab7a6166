// Package replica binds the set actors to the raft cluster: commands and
// snapshots travel the raft log as bytes (Proposer, the applier), Start
// builds the replicated registry over a cluster or standalone node, and
// the gossip relays carry probe results to the leader (ProbeRelay, behind
// ProbeGate) and hand pending call-load commands to the other nodes
// (LoadRelay). See docs/cluster-design.md. The cluster package itself stays
// domain-free; this package is where actors and cluster meet.
package replica

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// snapshotTimeout bounds how long a raft snapshot waits for the set actors.
const snapshotTimeout = 10 * time.Second

// Config is what Start builds a replicated registry from.
type Config struct {
	// Node is the validated config of the raft node: a cluster member, or
	// a standalone one-node raft when Node.Standalone is set.
	Node cluster.Config
	// Dispatcher is the configuration the registry runs under.
	Dispatcher *dispatch.Config
	// Actors are the registry's options; Start sets its Proposer.
	Actors actors.Options
	// Commit observes each proposal's time to commit; nil = not measured.
	Commit prometheus.Observer
	// LeaderWork runs on the leader only, from a leadership's start to its
	// end (cluster.Node.OnLeadership).
	LeaderWork []func(context.Context)
}

// Source is the destination source as Start uses it; *source.Sources
// implements it. Sync runs on each new leader; WarnDrift runs once on a
// cluster member, in its own goroutine.
type Source interface {
	SetRegistry(reg *actors.Registry)
	Sync(ctx context.Context, replace bool) bool
	WarnDrift(node source.RaftView)
}

// Proposer adapts a cluster node to actors.Proposer: commands travel the raft
// log encoded, and the result is the error of this node's own Apply.
type Proposer struct {
	Node *cluster.Node
	// Commit observes each proposal's time to commit and local apply,
	// seconds; nil = not measured.
	Commit prometheus.Observer
}

// Propose implements actors.Proposer.
func (p Proposer) Propose(ctx context.Context, c dispatch.Command) error {
	b, err := dispatch.EncodeCommand(c)
	if err != nil {
		return fmt.Errorf("encode %s: %w", c.Kind, err)
	}
	start := time.Now()
	res, err := p.Node.Propose(ctx, b)
	if p.Commit != nil && err == nil {
		p.Commit.Observe(time.Since(start).Seconds())
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

// standaloneSyncTimeout bounds how long a standalone node waits at start
// for its raft log to replay and its source's sets to commit.
const standaloneSyncTimeout = time.Minute

// Start builds the replicated registry and its raft node and starts
// the node: a cluster member with cluster.enabled, else a standalone node
// (one-node raft on local disk), so both run the same registry, proposer and
// applier. The registry starts empty: its sets come from the raft log, a
// snapshot, or the leader's source (source.Sources.Sync). Load-expiry sweeps run on the
// leader only, and so does cfg.LeaderWork. A standalone node returns once its
// sets are committed; ctx bounds the first gossip join of a cluster member.
func Start(ctx context.Context, cfg Config, src Source, log *slog.Logger) (*actors.Registry, *cluster.Node, error) {
	ncfg, opts := cfg.Node, cfg.Actors
	standalone := ncfg.Standalone
	app := &applier{}
	node, err := cluster.New(ncfg, app, log.With("component", "cluster"))
	if err != nil {
		return nil, nil, err
	}
	opts.Proposer = Proposer{Node: node, Commit: cfg.Commit}
	reg, err := actors.NewRegistry(cfg.Dispatcher, nil, opts)
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
	if cfg.Dispatcher.HashSize > 0 {
		interval := time.Duration(cfg.Dispatcher.HashCheckInterval) * time.Second
		node.OnLeadership(func(ctx context.Context) { reg.RunExpiry(ctx, interval) })
	}
	for _, fn := range cfg.LeaderWork {
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
