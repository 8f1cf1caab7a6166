package main

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
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip"
)

// metricsScrapeTimeout bounds how long a scrape waits for the set actors'
// status; a busy node answers the scrape without destination series instead
// of holding it.
const metricsScrapeTimeout = 5 * time.Second

// metrics is the node's Prometheus registry (SPEC §8), served on GET
// /metrics by the management API. Other parts of the node register their
// own collectors on reg.
type metrics struct {
	reg        *prometheus.Registry
	events     *prometheus.CounterVec
	dests      *destCollector
	requests   *prometheus.CounterVec
	selections *prometheus.CounterVec
	replies    *prometheus.CounterVec
	commit     prometheus.Histogram // raft commit latency of this node's proposals
	loadFails  *prometheus.CounterVec
}

var _ sip.Observer = (*metrics)(nil)

// newMetrics builds the registry with the Go runtime and process collectors,
// the destination event counter and the destination collector (fed once
// newAPIServer hands it a backend). Create it before the actors registry so
// that OnEvent can be its actors.Options.OnEvent.
func newMetrics(log *slog.Logger) *metrics {
	m := &metrics{
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
func (m *metrics) Request(method, route string) {
	if !knownMethods[method] {
		method = "other"
	}
	m.requests.WithLabelValues(method, route).Inc()
}

// Selected implements sip.Observer.
func (m *metrics) Selected(setID int, uri string) {
	m.selections.WithLabelValues(strconv.Itoa(setID), uri).Inc()
}

// Reply implements sip.Observer.
func (m *metrics) Reply(code int) {
	class := "other"
	if code >= 100 && code < 700 {
		class = strconv.Itoa(code/100) + "xx"
	}
	m.replies.WithLabelValues(class).Inc()
}

// LoadCommitFailure counts a call-load entry that failed to commit; it is
// the registry's actors.Options.OnLoadCommitFailure.
func (m *metrics) LoadCommitFailure(mode string) {
	m.loadFails.WithLabelValues(mode).Inc()
}

// OnEvent counts a dst-up/dst-down event. It never blocks, as the actors
// require of their OnEvent hook.
func (m *metrics) OnEvent(ev dispatch.Event) {
	name := "dst-down"
	if ev.Up {
		name = "dst-up"
	}
	m.events.WithLabelValues(strconv.Itoa(ev.SetID), ev.URI, name).Inc()
}

func (m *metrics) handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	})
}

// destCollector turns the backend's Status into per-destination series at
// scrape time, so nothing has to keep gauges in step with the actors.
// Until a backend is set it reports no destination series.
type destCollector struct {
	b   atomic.Pointer[backend]
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

// registerLoadQueue exports the call-load write path of reg: commands not
// committed yet, retries, hand-overs and what the expiry sweep had to
// remove, so that a dashboard shows a node falling behind before the loads
// disagree. handedOver counts the commands this node gossiped to others.
func (m *metrics) registerLoadQueue(reg *actors.Registry, handedOver func() uint64) {
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
