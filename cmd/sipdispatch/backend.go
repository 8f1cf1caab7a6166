package main

import (
	"context"
	"errors"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// leaderView is what readiness reads of the raft node; *cluster.Node
// implements it.
type leaderView interface {
	Leader() (id, addr string)
}

// nodeBackend is the management API's view of this node (api.Backend): the
// set actors for state and marks, the destination sources for reload, add
// and remove, the keepalive gate for ping_active, and the raft node for
// readiness. Each part keeps its own state; this type only routes calls.
type nodeBackend struct {
	*actors.Registry
	cfg       *dispatch.Config // the configuration the registry runs under
	src       *source.Sources
	gate      *replica.ProbeGate
	node      leaderView
	clustered bool // cluster.enabled
}

var _ api.Backend = (*nodeBackend)(nil)

// Config implements api.Backend.
func (b *nodeBackend) Config() *dispatch.Config { return b.cfg }

// Reload implements api.Backend: the source is read again and committed.
func (b *nodeBackend) Reload(ctx context.Context) error { return b.src.Reload(ctx) }

// Add implements api.Backend.
func (b *nodeBackend) Add(ctx context.Context, set int, uri string, flags dispatch.Flags, priority int, attrs string) error {
	return b.src.Add(ctx, set, uri, flags, priority, attrs)
}

// Remove implements api.Backend.
func (b *nodeBackend) Remove(ctx context.Context, set int, uri string) error {
	return b.src.Remove(ctx, set, uri)
}

// PingActive implements api.Backend; the keepalive gate owns the switch.
func (b *nodeBackend) PingActive() int { return b.gate.PingActive() }

// SetPingActive implements api.Backend.
func (b *nodeBackend) SetPingActive(v int) int { return b.gate.SetPingActive(v) }

// Ready implements api.Backend (docs/operations.md, /readyz): a node is
// ready once a raft leader exists (writes can commit) and, in a cluster,
// the replicated sets have arrived. A standalone node serves only after its
// sets committed, and may have none (an empty source).
func (b *nodeBackend) Ready() error {
	if id, _ := b.node.Leader(); id == "" {
		return errors.New("cluster has no leader")
	}
	if b.clustered && len(b.IDs()) == 0 {
		return errors.New("no destination sets replicated yet")
	}
	return nil
}
