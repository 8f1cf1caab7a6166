package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// ClusterInfo is what cluster.members and cluster.raft read; *cluster.Node
// satisfies it. Both methods are cheap and never block.
type ClusterInfo interface {
	Members() []cluster.Member
	Raft() (cluster.RaftStatus, error)
}

// errNoCluster answers the cluster methods on a node that runs alone.
var errNoCluster = &Error{Code: 500, Message: "Cluster Not Enabled"}

// SetCluster gives the API the node's cluster view; without it the cluster
// methods answer "Cluster Not Enabled". Call it before serving.
func (s *Server) SetCluster(c ClusterInfo) { s.cluster = c }

// SetLeaver makes cluster.leave available: it asks l to leave and waits.
// Call it before serving.
func (s *Server) SetLeaver(l *Leaver) { s.leaver = l }

// ProbeOwners tells which member probes a gateway (docs/cluster-design.md,
// "Probing"); replica.ProbeRelay implements it. ProbeOwner is cheap and
// never blocks.
type ProbeOwners interface {
	ProbeOwner(d *dispatch.Destination) string
}

// SetProbeOwners makes cluster.probers available; without it (a node that
// runs alone probes every gateway itself) it answers "Cluster Not Enabled".
// Call it before serving.
func (s *Server) SetProbeOwners(p ProbeOwners) { s.probers = p }

// probeOwners serves cluster.probers: for every destination, the member
// whose keepalive rounds cover it when it is due for a probe.
func (s *Server) probeOwners(ctx context.Context, _ params) (any, *Error) {
	if s.probers == nil {
		return nil, errNoCluster
	}
	sets, err := s.b.Status(ctx)
	if err != nil {
		return nil, failed("Internal error sets structure", err)
	}
	out := []obj{}
	for _, set := range sets {
		for i := range set.Dests {
			d := &set.Dests[i]
			out = append(out, obj{{"SET", set.ID}, {"URI", d.URI}, {"NODE", s.probers.ProbeOwner(&d.Destination)}})
		}
	}
	return obj{{"PROBERS", out}}, nil
}

// members serves cluster.members: every gossip member this node knows.
func (s *Server) members(context.Context, params) (any, *Error) {
	if s.cluster == nil {
		return nil, errNoCluster
	}
	var out []obj
	for _, m := range s.cluster.Members() {
		out = append(out, obj{{"NAME", m.Name}, {"ADDR", m.Addr}, {"STATE", string(m.State)},
			{"RAFT_ID", m.RaftID}, {"RAFT_ADDR", m.RaftAddr}, {"SINCE", m.Since.UTC().Format("2006-01-02T15:04:05Z")}})
	}
	return obj{{"MEMBERS", out}}, nil
}

// raftStatus serves cluster.raft: this node's raft view and its peers.
func (s *Server) raftStatus(context.Context, params) (any, *Error) {
	if s.cluster == nil {
		return nil, errNoCluster
	}
	st, err := s.cluster.Raft()
	if err != nil {
		return nil, failed("Raft Status Failed", err)
	}
	peers := make([]obj, 0, len(st.Peers))
	for _, p := range st.Peers {
		peers = append(peers, obj{{"ID", p.ID}, {"ADDR", p.Addr}, {"SUFFRAGE", p.Suffrage}})
	}
	return obj{{"STATE", st.State}, {"LEADER_ID", st.LeaderID}, {"LEADER_ADDR", st.LeaderAddr},
		{"TERM", st.Term}, {"LAST_INDEX", st.LastIndex}, {"COMMIT_INDEX", st.CommitIndex},
		{"APPLIED_INDEX", st.AppliedIndex}, {"PEERS", peers}}, nil
}

// leaveTimeout bounds a graceful leave: the gossip leave broadcast (up to
// memberlist's TCP timeout, 10 s, though it normally goes out within one
// gossip round) plus the raft configuration change. With the SIP server's
// 5 s shutdown grace it stays within the admin client's timeout.
const leaveTimeout = 20 * time.Second

// errNotLeaving answers a cluster.leave that arrived while the node was
// already shutting down without leaving.
var errNotLeaving = errors.New("the node is shutting down without leaving the cluster")

// Leaver makes the process leave the cluster for good and exit: cluster.leave
// asks for it and waits; serve stops taking SIP traffic, then leaves (Finish)
// and hands the outcome to every waiting caller. With
// cluster.leave_on_terminate serve leaves on SIGTERM/SIGINT as well.
type Leaver struct {
	node  LeaveNode
	quit  context.CancelFunc // ends serve's SIP server
	asked atomic.Bool
	once  sync.Once
	done  chan struct{} // closed by Finish once err is set
	err   error
}

// LeaveNode is the node a Leaver takes out of the cluster; *cluster.Node
// implements it. Leave blocks until the leave committed or ctx ends.
type LeaveNode interface {
	Leave(ctx context.Context) error
}

// NewLeaver returns the Leaver of node; quit ends serve's SIP server.
func NewLeaver(node LeaveNode, quit context.CancelFunc) *Leaver {
	return &Leaver{node: node, quit: quit, done: make(chan struct{})}
}

// request asks serve to leave and shut down, and waits for the leave's outcome.
func (l *Leaver) request(ctx context.Context) error {
	l.asked.Store(true)
	l.quit()
	select {
	case <-l.done:
		return l.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for the leave: %w", ctx.Err())
	}
}

// Finish runs on serve's way out, after the SIP server stopped: it leaves
// the cluster when asked to or when onTerminate is set, and releases the
// waiting callers. nil without a cluster.
func (l *Leaver) Finish(onTerminate bool, log *slog.Logger) error {
	if l == nil {
		return nil
	}
	var err error
	l.once.Do(func() {
		if !l.asked.Load() && !onTerminate {
			l.err = errNotLeaving
			close(l.done)
			return
		}
		log.Info("cluster: leaving the cluster", "requested", l.asked.Load(), "leave_on_terminate", onTerminate)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
		defer cancel()
		if err = l.node.Leave(ctx); err != nil {
			err = fmt.Errorf("leave the cluster: %w", err)
		} else {
			log.Info("cluster: left the cluster", "took", time.Since(start))
		}
		l.err = err
		close(l.done)
	})
	return err
}

// leave serves cluster.leave: the node leaves the raft configuration (the
// leader removes it; a leader removes itself and steps down) and gossip, and
// then the process exits. It answers once the leave has committed. Like
// Consul it does not refuse a leave that leaves the remaining voters without
// a quorum (docs/operations.md).
func (s *Server) leave(ctx context.Context, _ params) (any, *Error) {
	if s.cluster == nil || s.leaver == nil {
		return nil, errNoCluster
	}
	if err := s.leaver.request(ctx); err != nil {
		return nil, failed("Leave Failed", err)
	}
	return "Ok. Left the cluster; the node is shutting down.", nil
}
