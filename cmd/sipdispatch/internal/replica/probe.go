package replica

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// probeCluster is what ProbeRelay needs from the cluster node;
// *cluster.Node implements it. Every method is cheap and non-blocking.
type probeCluster interface {
	Members() []cluster.Member
	IsLeader() bool
	Broadcast(name string, payload []byte) error
}

// probeSink takes a keepalive result into the replicated state;
// *actors.Registry implements it (in replicated mode it proposes a CmdProbe
// without waiting).
type probeSink interface {
	ReportProbe(setID int, uri string, res dispatch.ProbeResult)
}

// Outcomes of a probe result in a cluster, the event label of
// sipdispatch_cluster_probe_reports_total.
const (
	probeProposedLocal   = "proposed_local"   // this node's result, proposed by this node (the leader)
	probeGossiped        = "gossiped"         // this node's result, broadcast for the leader
	probeGossipError     = "gossip_error"     // this node's result, not broadcast (too large, not started)
	probeProposedRelayed = "proposed_relayed" // another node's result, proposed by this node (the leader)
	probeIgnored         = "ignored"          // another node's result reaching a non-leader
	probeMalformed       = "malformed"        // a payload that failed to decode
)

// ProbeRelay runs the probing of a cluster: each node probes only the
// gateways it owns by rendezvous hash over the live members, and the leader
// alone proposes the results (its own directly, the others' as they arrive
// by gossip), so the pings and raft entries per interval do not grow with
// the number of nodes. See docs/cluster-design.md, "Probing".
type ProbeRelay struct {
	self       string // this node's name, as in cluster.Member.Name
	node       probeCluster
	sink       probeSink
	log        *slog.Logger
	count      *prometheus.CounterVec // by outcome
	ownedGauge prometheus.Gauge       // targets this node probed in its last round
}

// NewProbeRelay builds the relay of node self and registers its metrics on
// reg.
func NewProbeRelay(self string, node probeCluster, sink probeSink, reg prometheus.Registerer, log *slog.Logger) *ProbeRelay {
	r := &ProbeRelay{self: self, node: node, sink: sink, log: log,
		count: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipdispatch_cluster_probe_reports_total",
			Help: "Keepalive results in a cluster by outcome: proposed_local, gossiped, gossip_error, proposed_relayed, ignored (reached a non-leader), malformed.",
		}, []string{"event"}),
		ownedGauge: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sipdispatch_cluster_probe_owned",
			Help: "Destinations this node was due to probe in its last keepalive round (those it owns by rendezvous hash over the live members).",
		}),
	}
	for _, e := range []string{probeProposedLocal, probeGossiped, probeGossipError, probeProposedRelayed, probeIgnored, probeMalformed} {
		r.count.WithLabelValues(e)
	}
	reg.MustRegister(r.count, r.ownedGauge)
	return r
}

// ProbeGate is the proxy's view of the registry with Kamailio's ping_active
// switch applied: while keepalives are off, no destination is due. It owns
// that switch (dispatcher.ping_active reads and sets it through the API's
// backend). In a cluster, Relay limits the targets to this node's share and
// routes the results to the leader; nil on a single node.
type ProbeGate struct {
	*actors.Registry
	Relay *ProbeRelay

	// pingOff is the negation of ping_active so that the zero value means
	// "keepalives on", as Kamailio starts.
	pingOff atomic.Int64
}

// PingActive reports Kamailio's ping_active state (1: keepalives on).
func (g *ProbeGate) PingActive() int { return int(1 - g.pingOff.Load()) }

// SetPingActive changes ping_active and returns the previous value.
func (g *ProbeGate) SetPingActive(v int) int { return int(1 - g.pingOff.Swap(int64(1-v))) }

// ProbeTargets implements sip.Dispatcher.
func (g *ProbeGate) ProbeTargets(ctx context.Context) ([]actors.ProbeTarget, error) {
	if g.PingActive() == 0 {
		return nil, nil
	}
	targets, err := g.Registry.ProbeTargets(ctx)
	if g.Relay != nil {
		targets = g.Relay.owned(targets)
	}
	return targets, err
}

// ReportProbe implements sip.Dispatcher: in a cluster the result goes to the
// relay (proposed by the leader, gossiped by the others); on a single node
// the registry takes it as before.
func (g *ProbeGate) ReportProbe(setID int, uri string, res dispatch.ProbeResult) {
	if g.Relay != nil {
		g.Relay.report(setID, uri, res)
		return
	}
	g.Registry.ReportProbe(setID, uri, res)
}

// probeKey is the rendezvous key of a gateway: its URI, without the set, so
// a gateway listed with the same URI in several sets is probed by one node
// (once per set, as a single node does).
func probeKey(d *dispatch.Destination) string { return d.URI }

// liveProbers are the names of the members that share the probing: alive in
// gossip and advertising a raft id (a node of this cluster, not a stray
// memberlist peer). self is always one of them, whatever gossip says of it.
func liveProbers(members []cluster.Member, self string) []string {
	out := []string{self}
	for _, m := range members {
		if m.State == cluster.StateAlive && m.RaftID != "" && m.Name != self {
			out = append(out, m.Name)
		}
	}
	return out
}

// ownedTargets keeps the targets whose gateway self owns among probers.
func ownedTargets(targets []actors.ProbeTarget, self string, probers []string) []actors.ProbeTarget {
	out := targets[:0:0]
	for _, t := range targets {
		if dispatch.RendezvousOwner(probeKey(&t.Dest), probers) == self {
			out = append(out, t)
		}
	}
	return out
}

// owned filters one round's targets down to this node's share, as the live
// members are known right now. When gossip declares a member dead, its
// gateways fall to the others from their next round.
func (r *ProbeRelay) owned(targets []actors.ProbeTarget) []actors.ProbeTarget {
	mine := ownedTargets(targets, r.self, liveProbers(r.node.Members(), r.self))
	r.ownedGauge.Set(float64(len(mine)))
	return mine
}

// ProbeOwner names the member that probes d's gateway in its rounds, as
// the live members are known right now (the API's cluster.probers).
func (r *ProbeRelay) ProbeOwner(d *dispatch.Destination) string {
	return dispatch.RendezvousOwner(probeKey(d), liveProbers(r.node.Members(), r.self))
}

// report takes one of this node's keepalive results: the leader proposes it,
// any other node gossips it to the leader. A broadcast that never reaches the
// leader is not retried: the next round probes the gateway again. Never
// blocks.
func (r *ProbeRelay) report(setID int, uri string, res dispatch.ProbeResult) {
	if r.node.IsLeader() {
		r.sink.ReportProbe(setID, uri, res)
		r.count.WithLabelValues(probeProposedLocal).Inc()
		return
	}
	b, err := encodeProbeReport(probeReport{Set: setID, URI: uri, Result: res})
	if err == nil {
		err = r.node.Broadcast(probeBroadcastName(setID, uri), b)
	}
	if err != nil {
		r.count.WithLabelValues(probeGossipError).Inc()
		r.log.Warn("cluster: probe result not gossiped", "set", setID, "uri", uri, "err", err)
		return
	}
	r.count.WithLabelValues(probeGossiped).Inc()
}

// Receive is the node's gossip handler (cluster.Node.OnMessage): the leader proposes the probe
// results of the other nodes; a non-leader ignores them (the sender's
// broadcast also reaches the leader, or is repeated next round). Payloads
// of other kinds are not this handler's.
func (r *ProbeRelay) Receive(from string, payload []byte) {
	if len(payload) == 0 || payload[0] != probeReportV1 {
		return
	}
	p, err := decodeProbeReport(payload)
	if err != nil {
		r.count.WithLabelValues(probeMalformed).Inc()
		r.log.Warn("cluster: malformed probe result", "from", from, "err", err)
		return
	}
	if !r.node.IsLeader() {
		r.count.WithLabelValues(probeIgnored).Inc()
		return
	}
	r.sink.ReportProbe(p.Set, p.URI, p.Result)
	r.count.WithLabelValues(probeProposedRelayed).Inc()
}

// probeBroadcastName names a gateway's latest result in the gossip queue, so
// that a newer result replaces one still queued. It is a hash of set and URI,
// not the URI itself, to leave the size limit to the payload; a collision
// only lets one gateway's result displace another's queued one, which the
// next round repeats.
func probeBroadcastName(setID int, uri string) string {
	h := fnv.New64a()
	h.Write([]byte(strconv.Itoa(setID)))
	h.Write([]byte{0})
	h.Write([]byte(uri))
	return "probe:" + strconv.FormatUint(h.Sum64(), 16)
}

// probeReportV1 is the first byte of a gossiped probe result, version 1.
// Payloads on the node's gossip channel are told apart by their first byte;
// a later format of the report takes a new byte, never this one.
const probeReportV1 byte = 'p'

// maxProbeReport bounds an encoded probe report, so that with the gossip
// envelope (sender and broadcast names) it fits the cluster's ~1 KB limit.
const maxProbeReport = 768

// probeReport is one keepalive result as gossiped to the leader.
type probeReport struct {
	Set    int
	URI    string
	Result dispatch.ProbeResult
}

// errProbeReport marks a gossiped probe result that failed to decode.
var errProbeReport = errors.New("malformed probe report")

// encodeProbeReport encodes p as probeReportV1 followed by a CmdProbe in
// dispatch's versioned command format (fields are only ever appended), so the
// report needs no decoder of its own beyond the checks below.
func encodeProbeReport(p probeReport) ([]byte, error) {
	c, err := dispatch.EncodeCommand(dispatch.Command{Kind: dispatch.CmdProbe, Set: p.Set, URI: p.URI, Probe: p.Result})
	if err != nil {
		return nil, fmt.Errorf("encode probe report: %w", err)
	}
	b := append([]byte{probeReportV1}, c...)
	if len(b) > maxProbeReport {
		return nil, fmt.Errorf("encode probe report: %d bytes for %q, limit %d: %w", len(b), p.URI, maxProbeReport, cluster.ErrTooLarge)
	}
	return b, nil
}

// decodeProbeReport decodes what encodeProbeReport wrote. Anything else is an
// error wrapping errProbeReport, never a panic; the size is checked before
// anything is decoded.
func decodeProbeReport(b []byte) (probeReport, error) {
	if len(b) == 0 || b[0] != probeReportV1 {
		return probeReport{}, fmt.Errorf("decode probe report: unknown kind or version: %w", errProbeReport)
	}
	if len(b) > maxProbeReport {
		return probeReport{}, fmt.Errorf("decode probe report: %d bytes, limit %d: %w", len(b), maxProbeReport, errProbeReport)
	}
	c, err := dispatch.DecodeCommand(b[1:])
	switch {
	case err != nil:
		return probeReport{}, fmt.Errorf("decode probe report: %w: %w", errProbeReport, err)
	case c.Kind != dispatch.CmdProbe:
		return probeReport{}, fmt.Errorf("decode probe report: command %s, want probe: %w", c.Kind, errProbeReport)
	case c.Set < 0 || c.URI == "" || c.DUID != "" || c.CallID != "" || len(c.Dests) != 0 || c.Probe.RTT < 0:
		return probeReport{}, fmt.Errorf("decode probe report: set %d, uri %q: not a probe result: %w", c.Set, c.URI, errProbeReport)
	}
	return probeReport{Set: c.Set, URI: c.URI, Result: c.Probe}, nil
}
