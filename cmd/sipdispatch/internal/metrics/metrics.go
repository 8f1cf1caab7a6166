// Package metrics is the node's Prometheus registry: the sip.Observer
// counters, the destination series read from the set actors at scrape time,
// the call-load write path, the cluster's raft and gossip view and its
// counters, and the SIP server's dropped messages. docs/operations.md lists
// every series. Other parts of the node register their own collectors on
// Registry.
package metrics

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip"
)

// metricsScrapeTimeout bounds how long a scrape waits for the set actors'
// status; a busy node answers the scrape without destination series instead
// of holding it.
const metricsScrapeTimeout = 5 * time.Second

// Metrics is the node's Prometheus registry (docs/operations.md, "Metrics"),
// served on GET /metrics by the management API (Handler). Other parts of the
// node register their own collectors on Registry.
type Metrics struct {
	reg        *prometheus.Registry
	events     *prometheus.CounterVec
	dests      *destCollector
	requests   *prometheus.CounterVec
	selections *prometheus.CounterVec
	replies    *prometheus.CounterVec
	commit     prometheus.Histogram // raft commit latency of this node's proposals
	loadFails  *prometheus.CounterVec
}

var _ sip.Observer = (*Metrics)(nil)

// New builds the registry with the Go runtime and process collectors, the
// destination event counter and the destination collector (fed once
// WatchDestinations hands it a source). Create it before the actors
// registry so that OnEvent can be its actors.Options.OnEvent.
func New(log *slog.Logger) *Metrics {
	m := &Metrics{
		dests: &destCollector{log: log},
		reg:   prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipdispatch_destination_events_total",
			Help: "Destination state changes between selectable and not (dst-up, dst-down).",
		}, []string{"set", "uri", "event"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipdispatch_sip_requests_total",
			Help: "SIP requests handled, by method and matched route (route \"\" = none matched, \"in-dialog\" = followed a Route set).",
		}, []string{"method", "route"}),
		selections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipdispatch_selections_total",
			Help: "Requests sent to a destination, failover attempts included.",
		}, []string{"set", "uri"}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipdispatch_sip_replies_total",
			Help: "SIP responses sent upstream, relayed or local, by class (1xx..6xx).",
		}, []string{"class"}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sipdispatch_raft_commit_seconds",
			Help:    "Time from proposing a state change to its commit and local apply (cluster only).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		loadFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sipdispatch_load_commit_failures_total",
			Help: "Algorithm-10 call-load entries this node failed to commit, by cluster.load_replication mode (sync: the INVITE got 503; async: the call went on without an entry).",
		}, []string{"mode"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.events,
		m.dests,
		m.requests,
		m.selections,
		m.replies,
		m.commit,
		m.loadFails,
	)
	// Both series exist from the start, so that rate() sees the first failure.
	m.loadFails.WithLabelValues(actors.LoadCommitSync)
	m.loadFails.WithLabelValues(actors.LoadCommitAsync)
	return m
}

// knownMethods bounds the method label: anything else counts as "other", so
// a client inventing methods cannot grow the series without limit.
var knownMethods = map[string]bool{
	"INVITE": true, "ACK": true, "BYE": true, "CANCEL": true, "OPTIONS": true, "REGISTER": true,
	"PRACK": true, "SUBSCRIBE": true, "NOTIFY": true, "PUBLISH": true, "INFO": true, "REFER": true,
	"MESSAGE": true, "UPDATE": true,
}

// Request implements sip.Observer.
func (m *Metrics) Request(method, route string) {
	if !knownMethods[method] {
		method = "other"
	}
	m.requests.WithLabelValues(method, route).Inc()
}

// Selected implements sip.Observer.
func (m *Metrics) Selected(setID int, uri string) {
	m.selections.WithLabelValues(strconv.Itoa(setID), uri).Inc()
}

// Reply implements sip.Observer.
func (m *Metrics) Reply(code int) {
	class := "other"
	if code >= 100 && code < 700 {
		class = strconv.Itoa(code/100) + "xx"
	}
	m.replies.WithLabelValues(class).Inc()
}

// LoadCommitFailure counts a call-load entry that failed to commit; it is
// the registry's actors.Options.OnLoadCommitFailure.
func (m *Metrics) LoadCommitFailure(mode string) {
	m.loadFails.WithLabelValues(mode).Inc()
}

// OnEvent counts a dst-up/dst-down event. It never blocks, as the actors
// require of their OnEvent hook.
func (m *Metrics) OnEvent(ev dispatch.Event) {
	name := "dst-down"
	if ev.Up {
		name = "dst-up"
	}
	m.events.WithLabelValues(strconv.Itoa(ev.SetID), ev.URI, name).Inc()
}

// Registry is where other parts of the node register their collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// CommitObserver observes the time from proposing a state change to its
// commit and local apply, in seconds (sipdispatch_raft_commit_seconds).
func (m *Metrics) CommitObserver() prometheus.Observer { return m.commit }

// WatchDestinations makes the destination series come from src, read at
// each scrape; until it is called there are none.
func (m *Metrics) WatchDestinations(src Destinations) { m.dests.b.Store(&src) }

// Handler serves the registry in the Prometheus text format; errors of a
// collector are logged at warn level and cost only that collector's series.
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// Destinations is what the destination series are read from at scrape time;
// the API's backend (over *actors.Registry) implements it. Status may block
// for as long as ctx allows; it is called from the scraping goroutine.
type Destinations interface {
	// Config is the dispatcher configuration (ds_ping_latency_stats
	// decides whether the latency series exist).
	Config() *dispatch.Config
	// Status returns every set's destinations and runtime state.
	Status(ctx context.Context) ([]actors.SetStatus, error)
}

// destCollector turns the backend's Status into per-destination series at
// scrape time, so nothing has to keep gauges in step with the actors.
// Until a backend is set it reports no destination series.
type destCollector struct {
	b   atomic.Pointer[Destinations]
	log *slog.Logger
}

var (
	descDestUp = prometheus.NewDesc("sipdispatch_destination_up",
		"1 when the destination may be selected (not inactive or disabled), else 0.",
		[]string{"set", "uri"}, nil)
	descDestState = prometheus.NewDesc("sipdispatch_destination_state",
		"1 for the destination's current state (active, trying, inactive, disabled), 0 for the others.",
		[]string{"set", "uri", "state"}, nil)
	descDestCalls = prometheus.NewDesc("sipdispatch_destination_calls",
		"Calls in progress on the destination (call load, algorithm 10).",
		[]string{"set", "uri"}, nil)
	descSetCalls = prometheus.NewDesc("sipdispatch_set_calls",
		"Call-load entries of the set.",
		[]string{"set"}, nil)
	descRTT = prometheus.NewDesc("sipdispatch_probe_rtt_seconds",
		"Keepalive round trip: running mean (avg), estimate (est) and largest (max); with ds_ping_latency_stats.",
		[]string{"set", "uri", "stat"}, nil)
	descTimeouts = prometheus.NewDesc("sipdispatch_probe_timeouts_total",
		"Keepalives that got no reply; with ds_ping_latency_stats.",
		[]string{"set", "uri"}, nil)
)

// Describe implements prometheus.Collector.
func (c *destCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descDestUp, descDestState, descDestCalls, descSetCalls, descRTT, descTimeouts} {
		ch <- d
	}
}

// stateName names the state the way an operator reads Kamailio's flag letter.
func stateName(f dispatch.Flags) string {
	switch f.Letters()[0] {
	case 'D':
		return "disabled"
	case 'I':
		return "inactive"
	case 'T':
		return "trying"
	}
	return "active"
}

var stateNames = []string{"active", "trying", "inactive", "disabled"}

// Collect implements prometheus.Collector.
func (c *destCollector) Collect(ch chan<- prometheus.Metric) {
	bp := c.b.Load()
	if bp == nil {
		return
	}
	b := *bp
	ctx, cancel := context.WithTimeout(context.Background(), metricsScrapeTimeout)
	defer cancel()
	sets, err := b.Status(ctx)
	if err != nil {
		c.log.Warn("metrics: destination status", "err", err)
		ch <- prometheus.NewInvalidMetric(descDestUp, err)
		return
	}
	latency := b.Config().PingLatencyStats != 0
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, set := range sets {
		sid := strconv.Itoa(set.ID)
		gauge(descSetCalls, float64(set.Calls), sid)
		for _, d := range set.Dests {
			up := 1.0
			if d.State.Flags.Skip() {
				up = 0
			}
			gauge(descDestUp, up, sid, d.URI)
			cur := stateName(d.State.Flags)
			for _, s := range stateNames {
				v := 0.0
				if s == cur {
					v = 1
				}
				gauge(descDestState, v, sid, d.URI, s)
			}
			gauge(descDestCalls, float64(d.State.Load), sid, d.URI)
			if latency {
				l := d.State.Latency
				gauge(descRTT, l.Avg/1000, sid, d.URI, "avg")
				gauge(descRTT, l.Est/1000, sid, d.URI, "est")
				gauge(descRTT, l.Max/1000, sid, d.URI, "max")
				ch <- prometheus.MustNewConstMetric(descTimeouts, prometheus.CounterValue, float64(l.Timeouts), sid, d.URI)
			}
		}
	}
}

// LoadQueue is the registry's call-load write path as RegisterLoadQueue
// reads it; *actors.Registry implements it. Both methods are cheap and
// never block.
type LoadQueue interface {
	LoadQueueStats() actors.LoadQueueStats
	ExpiredLoads() uint64
}

// RegisterLoadQueue exports the call-load write path of reg: commands not
// committed yet, retries, hand-overs and what the expiry sweep had to
// remove, so that a dashboard shows a node falling behind before the loads
// disagree. handedOver counts the commands this node gossiped to others.
func (m *Metrics) RegisterLoadQueue(reg LoadQueue, handedOver func() uint64) {
	counter := func(name, help string, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sipdispatch_load_pending_commands",
			Help: "Call-load confirms, moves and removals this node handled that have not committed yet (kept and retried until they do).",
		}, func() float64 { return float64(reg.LoadQueueStats().Pending) }),
		counter("sipdispatch_load_command_retries_total",
			"Attempts to commit a pending call-load command after a failed one (no leader, cut off).",
			func() uint64 { return reg.LoadQueueStats().Retries }),
		counter("sipdispatch_load_commands_given_up_total",
			"Pending call-load commands dropped because their entry would have expired anyway.",
			func() uint64 { return reg.LoadQueueStats().GivenUp }),
		counter("sipdispatch_load_commands_rejected_total",
			"Pending call-load commands the state refused for good (e.g. a move to a destination a reload removed).",
			func() uint64 { return reg.LoadQueueStats().Rejected }),
		counter("sipdispatch_load_commands_adopted_total",
			"Pending call-load commands other nodes handed over to this one.",
			func() uint64 { return reg.LoadQueueStats().Adopted }),
		counter("sipdispatch_load_commands_handed_over_total",
			"Pending call-load commands this node handed over to the other nodes by gossip.",
			handedOver),
		counter("sipdispatch_load_entries_expired_total",
			"Call-load entries the expiry sweep removed on this node: calls whose end was never seen.",
			reg.ExpiredLoads),
	)
}

// Cluster is the node's cluster view as the cluster series read it at scrape
// time; *cluster.Node implements it. Every method is cheap and never blocks.
type Cluster interface {
	Members() []cluster.Member
	Raft() (cluster.RaftStatus, error)
	Stats() cluster.Stats
}

// RegisterCluster exports the cluster view (raft state, term, indexes,
// peers, gossip members) and the node's counters (cluster.Stats): raft
// entries and commands applied, group commit, forwarding, and what the node
// refused (bad entries, snapshots, RPC frames and gossip, TLS handshakes) or
// dropped (gossip beyond its queue).
func (m *Metrics) RegisterCluster(c Cluster) {
	counter := func(name, help string, f func(cluster.Stats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(f(c.Stats())) })
	}
	m.reg.MustRegister(&clusterCollector{c: c},
		counter("sipdispatch_raft_entries_applied_total", "Raft log entries of commands this node's state machine applied.",
			func(s cluster.Stats) uint64 { return s.Entries }),
		counter("sipdispatch_raft_commands_applied_total", "Commands this node's state machine applied (several per entry with group commit).",
			func(s cluster.Stats) uint64 { return s.Commands }),
		counter("sipdispatch_raft_bad_entries_total", "Malformed raft log entries skipped.",
			func(s cluster.Stats) uint64 { return s.BadEntries }),
		counter("sipdispatch_raft_bad_snapshots_total", "Raft snapshots that failed to restore.",
			func(s cluster.Stats) uint64 { return s.BadSnapshots }),
		counter("sipdispatch_raft_snapshot_restores_total", "Raft snapshots restored.",
			func(s cluster.Stats) uint64 { return s.Restores }),
		counter("sipdispatch_raft_batches_total", "Raft entries this node proposed as leader (group commit batches).",
			func(s cluster.Stats) uint64 { return s.Batches }),
		counter("sipdispatch_raft_batched_commands_total", "Commands in the entries this node proposed as leader.",
			func(s cluster.Stats) uint64 { return s.BatchedCommands }),
		counter("sipdispatch_raft_forwarded_total", "Proposals this node forwarded to the leader.",
			func(s cluster.Stats) uint64 { return s.Forwarded }),
		counter("sipdispatch_raft_forward_served_total", "Forwarded proposals this node received as leader.",
			func(s cluster.Stats) uint64 { return s.ForwardServed }),
		counter("sipdispatch_raft_bad_rpcs_total", "Malformed or unknown frames on the raft port.",
			func(s cluster.Stats) uint64 { return s.BadRPC }),
		counter("sipdispatch_raft_tls_failures_total", "TLS handshakes refused on the raft port (cluster.raft.tls).",
			func(s cluster.Stats) uint64 { return s.TLSFailed }),
		counter("sipdispatch_gossip_messages_received_total", "Gossip broadcasts delivered to this node's handlers.",
			func(s cluster.Stats) uint64 { return s.GossipReceived }),
		counter("sipdispatch_gossip_messages_dropped_total", "Gossip broadcasts dropped because the receive queue was full.",
			func(s cluster.Stats) uint64 { return s.GossipDropped }),
		counter("sipdispatch_gossip_messages_bad_total", "Malformed gossip broadcasts.",
			func(s cluster.Stats) uint64 { return s.GossipBad }),
		counter("sipdispatch_gossip_bad_meta_total", "Gossip members seen with malformed node metadata.",
			func(s cluster.Stats) uint64 { return s.BadMeta }),
	)
}

// RegisterSIPDropped exports the SIP messages dropped without an answer
// (sip.Server.Dropped: unparsable, or too broken to reply to).
func (m *Metrics) RegisterSIPDropped(dropped func() int64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sipdispatch_sip_dropped_messages_total",
		Help: "SIP messages dropped without an answer: unparsable, or too broken to reply to.",
	}, func() float64 { return float64(dropped()) }))
}

// RegisterReady exports the node's readiness, the check behind GET /readyz,
// as a gauge read at scrape time.
func (m *Metrics) RegisterReady(ready func() error) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sipdispatch_ready",
		Help: "1 when the node can serve traffic (GET /readyz answers 200), else 0.",
	}, func() float64 {
		if ready() != nil {
			return 0
		}
		return 1
	}))
}

// Capture is the SIP capture's sender (capture.Sender) as RegisterCapture
// reads it.
type Capture interface {
	Sent() uint64
	Dropped() uint64
}

// RegisterCapture exports the HEP sender's counters; with c nil (capture
// off) both stay 0, so alerts and dashboards find the series on every node.
func (m *Metrics) RegisterCapture(c Capture) {
	read := func(f func(Capture) uint64) func() float64 {
		return func() float64 {
			if c == nil {
				return 0
			}
			return float64(f(c))
		}
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sipdispatch_hep_sent_total",
			Help: "SIP messages sent to the HEP collector (capture.hep).",
		}, read(Capture.Sent)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sipdispatch_hep_dropped_total",
			Help: "Captured SIP messages not sent to the HEP collector: queue full, too large, or a failed write.",
		}, read(Capture.Dropped)),
	)
}

// clusterCollector turns the cluster view into series at scrape time.
type clusterCollector struct{ c Cluster }

var (
	descRaftLeader = prometheus.NewDesc("sipdispatch_raft_leader",
		"1 when this node is the raft leader.", nil, nil)
	descRaftTerm  = prometheus.NewDesc("sipdispatch_raft_term", "Current raft term.", nil, nil)
	descRaftIndex = prometheus.NewDesc("sipdispatch_raft_index",
		"Raft log indexes of this node.", []string{"kind"}, nil)
	descRaftPeers = prometheus.NewDesc("sipdispatch_raft_peers",
		"Raft servers in the configuration, by suffrage.", []string{"suffrage"}, nil)
	descGossipMembers = prometheus.NewDesc("sipdispatch_gossip_members",
		"Gossip members this node knows, by state.", []string{"state"}, nil)
)

// Describe implements prometheus.Collector.
func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRaftLeader, descRaftTerm, descRaftIndex, descRaftPeers, descGossipMembers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	states := map[string]float64{}
	for _, m := range c.c.Members() {
		states[string(m.State)]++
	}
	for s, n := range states {
		ch <- prometheus.MustNewConstMetric(descGossipMembers, prometheus.GaugeValue, n, s)
	}
	st, err := c.c.Raft()
	if err != nil {
		return
	}
	leader := 0.0
	if st.State == "Leader" {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descRaftLeader, prometheus.GaugeValue, leader)
	ch <- prometheus.MustNewConstMetric(descRaftTerm, prometheus.GaugeValue, float64(st.Term))
	for kind, v := range map[string]uint64{"last": st.LastIndex, "commit": st.CommitIndex, "applied": st.AppliedIndex} {
		ch <- prometheus.MustNewConstMetric(descRaftIndex, prometheus.GaugeValue, float64(v), kind)
	}
	peers := map[string]float64{}
	for _, p := range st.Peers {
		peers[p.Suffrage]++
	}
	for s, n := range peers {
		ch <- prometheus.MustNewConstMetric(descRaftPeers, prometheus.GaugeValue, n, s)
	}
}
