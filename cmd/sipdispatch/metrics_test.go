package main

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

func TestMetrics(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	cfg.PingLatencyStats = 1
	f := newFake(cfg, fakeSets()...)
	m := newMetrics(discardLog)
	srv := httptest.NewServer(newAPIServer(f, "", discardLog, m))
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

func TestMetricsAuth(t *testing.T) {
	f := newFake(dispatch.DefaultConfig(), fakeSets()...)
	srv := httptest.NewServer(newAPIServer(f, "tok", discardLog, newMetrics(discardLog)))
	t.Cleanup(srv.Close)
	scrape(t, srv.URL, "", 401)
	if body := scrape(t, srv.URL, "tok", 200); !strings.Contains(body, "sipdispatch_destination_up") {
		t.Errorf("scrape with token:\n%s", body)
	}
	// Without a metrics registry there is no /metrics.
	noMetrics := httptest.NewServer(newAPIServer(f, "", discardLog, nil))
	t.Cleanup(noMetrics.Close)
	scrape(t, noMetrics.URL, "", 404)
}

func scrape(t *testing.T, url, token string, wantStatus int) string {
	t.Helper()
	status, b := apiRequest(t, http.MethodGet, url+"/metrics", token, nil)
	if status != wantStatus {
		t.Errorf("GET /metrics: HTTP %d, want %d\n%s", status, wantStatus, b)
	}
	return string(b)
}
