package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

func TestMetrics(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	cfg.PingLatencyStats = 1
	f := &fakeDests{cfg: cfg, sets: fakeSets()}
	m := New(discardLog)
	m.WatchDestinations(f)
	srv := httptest.NewServer(m.Handler(discardLog))
	t.Cleanup(srv.Close)

	m.OnEvent(dispatch.Event{SetID: 1, URI: "sip:10.0.0.2", Up: false})
	m.OnEvent(dispatch.Event{SetID: 1, URI: "sip:10.0.0.2", Up: true})
	m.OnEvent(dispatch.Event{SetID: 1, URI: "sip:10.0.0.2", Up: false})
	m.LoadCommitFailure(actors.LoadCommitAsync)
	m.LoadCommitFailure(actors.LoadCommitAsync)

	want := `
# HELP sipdispatch_destination_calls Calls in progress on the destination (call load, algorithm 10).
# TYPE sipdispatch_destination_calls gauge
sipdispatch_destination_calls{set="1",uri="sip:10.0.0.1:5060"} 3
sipdispatch_destination_calls{set="1",uri="sip:10.0.0.2"} 2
sipdispatch_destination_calls{set="3",uri="sip:10.0.0.3"} 0
# HELP sipdispatch_destination_events_total Destination state changes between selectable and not (dst-up, dst-down).
# TYPE sipdispatch_destination_events_total counter
sipdispatch_destination_events_total{event="dst-down",set="1",uri="sip:10.0.0.2"} 2
sipdispatch_destination_events_total{event="dst-up",set="1",uri="sip:10.0.0.2"} 1
# HELP sipdispatch_destination_up 1 when the destination may be selected (not inactive or disabled), else 0.
# TYPE sipdispatch_destination_up gauge
sipdispatch_destination_up{set="1",uri="sip:10.0.0.1:5060"} 1
sipdispatch_destination_up{set="1",uri="sip:10.0.0.2"} 0
sipdispatch_destination_up{set="3",uri="sip:10.0.0.3"} 1
# HELP sipdispatch_load_commit_failures_total Algorithm-10 call-load entries this node failed to commit, by cluster.load_replication mode (sync: the INVITE got 503; async: the call went on without an entry).
# TYPE sipdispatch_load_commit_failures_total counter
sipdispatch_load_commit_failures_total{mode="async"} 2
sipdispatch_load_commit_failures_total{mode="sync"} 0
# HELP sipdispatch_probe_rtt_seconds Keepalive round trip: running mean (avg), estimate (est) and largest (max); with ds_ping_latency_stats.
# TYPE sipdispatch_probe_rtt_seconds gauge
sipdispatch_probe_rtt_seconds{set="1",stat="avg",uri="sip:10.0.0.1:5060"} 0.0125
sipdispatch_probe_rtt_seconds{set="1",stat="avg",uri="sip:10.0.0.2"} 0
sipdispatch_probe_rtt_seconds{set="1",stat="est",uri="sip:10.0.0.1:5060"} 0.011
sipdispatch_probe_rtt_seconds{set="1",stat="est",uri="sip:10.0.0.2"} 0
sipdispatch_probe_rtt_seconds{set="1",stat="max",uri="sip:10.0.0.1:5060"} 0.04
sipdispatch_probe_rtt_seconds{set="1",stat="max",uri="sip:10.0.0.2"} 0
sipdispatch_probe_rtt_seconds{set="3",stat="avg",uri="sip:10.0.0.3"} 0
sipdispatch_probe_rtt_seconds{set="3",stat="est",uri="sip:10.0.0.3"} 0
sipdispatch_probe_rtt_seconds{set="3",stat="max",uri="sip:10.0.0.3"} 0
# HELP sipdispatch_probe_timeouts_total Keepalives that got no reply; with ds_ping_latency_stats.
# TYPE sipdispatch_probe_timeouts_total counter
sipdispatch_probe_timeouts_total{set="1",uri="sip:10.0.0.1:5060"} 2
sipdispatch_probe_timeouts_total{set="1",uri="sip:10.0.0.2"} 0
sipdispatch_probe_timeouts_total{set="3",uri="sip:10.0.0.3"} 0
# HELP sipdispatch_set_calls Call-load entries of the set.
# TYPE sipdispatch_set_calls gauge
sipdispatch_set_calls{set="1"} 5
sipdispatch_set_calls{set="3"} 0
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want),
		"sipdispatch_destination_calls", "sipdispatch_destination_events_total", "sipdispatch_destination_up", "sipdispatch_load_commit_failures_total",
		"sipdispatch_probe_rtt_seconds", "sipdispatch_probe_timeouts_total", "sipdispatch_set_calls"); err != nil {
		t.Error(err)
	}

	// The state set: exactly one state is 1 per destination.
	body := scrape(t, srv.URL, "", 200)
	for _, line := range []string{
		`sipdispatch_destination_state{set="1",state="trying",uri="sip:10.0.0.1:5060"} 1`,
		`sipdispatch_destination_state{set="1",state="active",uri="sip:10.0.0.1:5060"} 0`,
		`sipdispatch_destination_state{set="1",state="disabled",uri="sip:10.0.0.2"} 1`,
		`sipdispatch_destination_state{set="3",state="active",uri="sip:10.0.0.3"} 1`,
		`sipdispatch_destination_state{set="3",state="inactive",uri="sip:10.0.0.3"} 0`,
		"go_goroutines ",
	} {
		if !strings.Contains(body, line) {
			t.Errorf("scrape lacks %q", line)
		}
	}
	ones := 0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "sipdispatch_destination_state{") && strings.HasSuffix(line, "} 1") {
			ones++
		}
	}
	if ones != 3 {
		t.Errorf("%d destination_state series are 1, want one per destination (3)", ones)
	}

	// A failing backend costs the destination series, not the scrape.
	f.mu.Lock()
	f.statusErr = errors.New("set actor busy")
	f.mu.Unlock()
	body = scrape(t, srv.URL, "", 200)
	if strings.Contains(body, "sipdispatch_destination_up{") || !strings.Contains(body, "sipdispatch_destination_events_total{") {
		t.Errorf("scrape with a failing backend:\n%s", body)
	}
}

func scrape(t *testing.T, url, _ string, wantStatus int) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != wantStatus {
		t.Errorf("GET /metrics: HTTP %d, want %d\n%s", resp.StatusCode, wantStatus, b)
	}
	return string(b)
}

var discardLog = slog.New(slog.DiscardHandler)

// fakeDests is a node's destination status as Destinations serves it.
type fakeDests struct {
	mu        sync.Mutex
	cfg       dispatch.Config
	sets      []actors.SetStatus
	statusErr error
}

func (f *fakeDests) Config() *dispatch.Config { return &f.cfg }

func (f *fakeDests) Status(context.Context) ([]actors.SetStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.statusErr != nil {
		return nil, f.statusErr
	}
	return slices.Clone(f.sets), nil
}

// fakeSets is a small node: set 1 with two gateways carrying call load,
// set 3 with one gateway without attributes.
func fakeSets() []actors.SetStatus {
	gw := func(set int, uri string) dispatch.Destination {
		return dispatch.Destination{SetID: set, URI: uri}
	}
	return []actors.SetStatus{
		{ID: 1, Calls: 5, Dests: []actors.DestStatus{
			{Destination: gw(1, "sip:10.0.0.1:5060"), State: dispatch.DestState{Flags: dispatch.FlagTrying | dispatch.FlagProbing, Load: 3,
				Latency: dispatch.LatencyStats{Avg: 12.5, Std: 1.25, Est: 11, Max: 40, Timeouts: 2}}},
			{Destination: gw(1, "sip:10.0.0.2"), State: dispatch.DestState{Flags: dispatch.FlagDisabled, Load: 2}},
		}},
		{ID: 3, Dests: []actors.DestStatus{{Destination: gw(3, "sip:10.0.0.3")}}},
	}
}

type fakeCluster struct {
	members []cluster.Member
	raft    cluster.RaftStatus
	err     error
	stats   cluster.Stats
}

func (f *fakeCluster) Members() []cluster.Member         { return f.members }
func (f *fakeCluster) Raft() (cluster.RaftStatus, error) { return f.raft, f.err }
func (f *fakeCluster) Stats() cluster.Stats              { return f.stats }

// The cluster view and the node's counters become series; a raft error
// costs the raft series only.
func TestClusterMetrics(t *testing.T) {
	fc := &fakeCluster{
		members: []cluster.Member{
			{Name: "n1", Addr: "127.0.0.11:7946", State: cluster.StateAlive, RaftID: "n1", RaftAddr: "127.0.0.11:7947", Since: time.Unix(1_700_000_000, 0)},
			{Name: "n2", Addr: "127.0.0.12:7946", State: cluster.StateDead, RaftID: "n2", RaftAddr: "127.0.0.12:7947"},
		},
		raft: cluster.RaftStatus{State: "Leader", LeaderID: "n1", LeaderAddr: "127.0.0.11:7947", Term: 3,
			LastIndex: 42, CommitIndex: 41, AppliedIndex: 40,
			Peers: []cluster.Peer{{ID: "n1", Addr: "127.0.0.11:7947", Suffrage: "Voter"}, {ID: "n2", Addr: "127.0.0.12:7947", Suffrage: "Voter"}}},
		stats: cluster.Stats{Entries: 7, Commands: 9, BadEntries: 1, BadRPC: 2, GossipDropped: 3, GossipBad: 4, TLSFailed: 5, BadMeta: 6},
	}
	m := New(discardLog)
	m.RegisterCluster(fc)
	dropped := int64(11)
	m.RegisterSIPDropped(func() int64 { return dropped })
	srv := httptest.NewServer(m.Handler(discardLog))
	defer srv.Close()
	body := scrape(t, srv.URL, "", 200)
	for _, line := range []string{
		"sipdispatch_raft_leader 1", "sipdispatch_raft_term 3", `sipdispatch_raft_index{kind="commit"} 41`,
		`sipdispatch_raft_peers{suffrage="Voter"} 2`, `sipdispatch_gossip_members{state="alive"} 1`,
		`sipdispatch_gossip_members{state="dead"} 1`,
		"sipdispatch_raft_entries_applied_total 7", "sipdispatch_raft_commands_applied_total 9",
		"sipdispatch_raft_bad_entries_total 1", "sipdispatch_raft_bad_rpcs_total 2",
		"sipdispatch_gossip_messages_dropped_total 3", "sipdispatch_gossip_messages_bad_total 4",
		"sipdispatch_raft_tls_failures_total 5", "sipdispatch_gossip_bad_meta_total 6",
		"sipdispatch_sip_dropped_messages_total 11",
	} {
		if !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	fc.err = errors.New("raft not started")
	body = scrape(t, srv.URL, "", 200)
	if strings.Contains(body, "sipdispatch_raft_leader") || !strings.Contains(body, "sipdispatch_gossip_members{") {
		t.Errorf("scrape with a failing raft:\n%s", body)
	}
}

type fakeCapture struct{ sent, dropped uint64 }

func (f *fakeCapture) Sent() uint64    { return f.sent }
func (f *fakeCapture) Dropped() uint64 { return f.dropped }

// The readiness gauge follows the check at each scrape; the HEP counters
// read the sender, and stay at 0 without one.
func TestReadyAndCaptureMetrics(t *testing.T) {
	var notReady error = errors.New("cluster has no leader")
	m := New(discardLog)
	m.RegisterReady(func() error { return notReady })
	c := &fakeCapture{sent: 12, dropped: 3}
	m.RegisterCapture(c)
	want := func(ready, sent, dropped int) string {
		return strings.NewReplacer("READY", strconv.Itoa(ready), "SENT", strconv.Itoa(sent), "DROPPED", strconv.Itoa(dropped)).Replace(`
# HELP sipdispatch_hep_dropped_total Captured SIP messages not sent to the HEP collector: queue full, too large, or a failed write.
# TYPE sipdispatch_hep_dropped_total counter
sipdispatch_hep_dropped_total DROPPED
# HELP sipdispatch_hep_sent_total SIP messages sent to the HEP collector (capture.hep).
# TYPE sipdispatch_hep_sent_total counter
sipdispatch_hep_sent_total SENT
# HELP sipdispatch_ready 1 when the node can serve traffic (GET /readyz answers 200), else 0.
# TYPE sipdispatch_ready gauge
sipdispatch_ready READY
`)
	}
	names := []string{"sipdispatch_ready", "sipdispatch_hep_sent_total", "sipdispatch_hep_dropped_total"}
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want(0, 12, 3)), names...); err != nil {
		t.Error(err)
	}
	notReady, c.sent = nil, 20
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(want(1, 20, 3)), names...); err != nil {
		t.Error(err)
	}
	off := New(discardLog)
	off.RegisterReady(func() error { return nil })
	off.RegisterCapture(nil)
	if err := testutil.GatherAndCompare(off.reg, strings.NewReader(want(1, 0, 0)), names...); err != nil {
		t.Error(err)
	}
}
