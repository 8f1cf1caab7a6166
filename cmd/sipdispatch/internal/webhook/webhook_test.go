package webhook

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/testwait"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

var discardLog = slog.New(slog.DiscardHandler)

// startWebhook runs a webhook to url until the test ends, sending as a
// leader does.
func startWebhook(t *testing.T, url string, c Config, queue int) *Sender {
	t.Helper()
	c.WebhookURL = url
	w, err := New(c, queue, "sipdispatch/test", discardLog)
	if err != nil {
		t.Fatal(err)
	}
	w.backoff = time.Millisecond
	w.active.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return w
}

func testEvent(n int) dispatch.Event {
	return dispatch.Event{SetID: n, URI: "sip:10.9.0.1:5060", DUID: "gw1", Up: false,
		Old: dispatch.FlagProbing, New: dispatch.FlagInactive | dispatch.FlagProbing,
		At: time.Date(2026, 11, 25, 23, 0, 0, 5e6, time.FixedZone("CET", 3600))}
}

func TestWebhookDelivers(t *testing.T) {
	got := make(chan *http.Request, 1)
	bodies := make(chan []byte, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	defer srv.Close()
	w := startWebhook(t, srv.URL+"/hook", Config{Timeout: 2 * time.Second, Retries: 3}, 8)
	w.OnEvent(testEvent(7))
	var r *http.Request
	select {
	case r = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no POST arrived")
	}
	if r.Method != http.MethodPost || r.URL.Path != "/hook" || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s, Content-Type %q", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	var body map[string]any
	if err := json.Unmarshal(<-bodies, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"event": "dst-down", "set": 7.0, "uri": "sip:10.9.0.1:5060", "duid": "gw1",
		"old_flags": "AP", "new_flags": "IP", "time": "2026-11-25T22:00:00.005Z"}
	for k, v := range want {
		if body[k] != v {
			t.Errorf("%s = %v, want %v", k, body[k], v)
		}
	}
	if len(body) != len(want) {
		t.Errorf("body %v has other fields", body)
	}
	testwait.For(t, "the delivered count", 10*time.Second, func() bool { return w.delivered.Load() == 1 })
}

// TestWebhookRetriesThenDrops: a failing receiver gets 1+retries attempts,
// then the event is dropped and the next one is sent.
func TestWebhookRetriesThenDrops(t *testing.T) {
	var attempts, fail atomic.Int32
	fail.Store(1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		if fail.Load() == 1 {
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	w := startWebhook(t, srv.URL, Config{Timeout: 2 * time.Second, Retries: 3}, 8)
	w.OnEvent(testEvent(1))
	testwait.For(t, "the drop", 10*time.Second, func() bool { return w.dropped.Load() == 1 })
	if n := attempts.Load(); n != 4 {
		t.Errorf("%d attempts, want 1 + 3 retries", n)
	}
	fail.Store(0)
	w.OnEvent(testEvent(2))
	testwait.For(t, "the second event", 10*time.Second, func() bool { return w.delivered.Load() == 1 })
	if n := attempts.Load(); n != 5 {
		t.Errorf("%d attempts in all, want 5: the dropped event must not be retried again", n)
	}
	want := `
# HELP sipdispatch_webhook_events_total Destination events POSTed to events.webhook_url (delivered) or given up (dropped: queue full or retries spent).
# TYPE sipdispatch_webhook_events_total counter
sipdispatch_webhook_events_total{result="delivered"} 1
sipdispatch_webhook_events_total{result="dropped"} 1
`
	if err := testutil.CollectAndCompare(w, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}

// TestWebhookTimeout: a receiver slower than events.timeout counts as failed.
func TestWebhookTimeout(t *testing.T) {
	release := make(chan struct{})
	var attempts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	w := startWebhook(t, srv.URL, Config{Timeout: 50 * time.Millisecond, Retries: 1}, 8)
	w.OnEvent(testEvent(1))
	testwait.For(t, "the drop", 10*time.Second, func() bool { return w.dropped.Load() == 1 })
	if n := attempts.Load(); n != 2 {
		t.Errorf("%d attempts, want 2", n)
	}
}

// TestWebhookNeverBlocks: with the receiver stuck, OnEvent still returns at
// once; events beyond the queue are dropped and counted, and the queued ones
// are delivered once the receiver answers.
func TestWebhookNeverBlocks(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	const queue, events = 4, 200
	w := startWebhook(t, srv.URL, Config{Timeout: time.Minute, Retries: 0}, queue)
	done := make(chan struct{})
	go func() {
		for i := range events {
			w.OnEvent(testEvent(i))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("OnEvent blocked on a stuck receiver")
	}
	if d := w.dropped.Load(); d < events-queue-1 {
		t.Errorf("dropped %d, want at least %d", d, events-queue-1)
	}
	close(release)
	testwait.For(t, "every event delivered or dropped", 10*time.Second, func() bool { return w.delivered.Load()+w.dropped.Load() == events })
	if d := w.delivered.Load(); d < queue || d > queue+1 {
		t.Errorf("delivered %d, want the %d queued (+1 in flight)", d, queue)
	}
}

// TestWebhookFromActors: the set actors' events reach the webhook and
// another hook, as serve wires them.
func TestWebhookFromActors(t *testing.T) {
	bodies := make(chan event, 4)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e event
		if err := json.NewDecoder(r.Body).Decode(&e); err != nil {
			t.Error(err)
		}
		bodies <- e
	}))
	defer srv.Close()
	w := startWebhook(t, srv.URL, Config{Timeout: 2 * time.Second, Retries: 0}, 8)
	var counted atomic.Int32
	cfg := dispatch.DefaultConfig()
	d, err := dispatch.NewDestination(3, "sip:10.9.0.2:5060", 0, 0, "duid=gwx")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := actors.NewRegistry(&cfg, dispatch.BuildSets([]dispatch.Destination{d}), actors.Options{
		Seed: 1, Logger: discardLog,
		OnEvent: func(ev dispatch.Event) { counted.Add(1); w.OnEvent(ev) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Stop()
	op, err := dispatch.ParseMarkState("i")
	if err != nil {
		t.Fatal(err)
	}
	op.Direct = true
	if err := reg.Mark(context.Background(), 3, d.URI, op); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-bodies:
		if e.Event != "dst-down" || e.Set != 3 || e.URI != d.URI || e.DUID != "gwx" || e.OldFlags != "AX" || e.NewFlags != "IX" {
			t.Errorf("event %+v", e)
		}
		if _, err := time.Parse(time.RFC3339Nano, e.Time); err != nil {
			t.Errorf("time %q: %v", e.Time, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event reached the webhook")
	}
	if counted.Load() != 1 {
		t.Errorf("the other hook saw %d events, want 1", counted.Load())
	}
}

// In a cluster only the leader sends, and only while it leads: a follower's
// (or a replayed) event is not queued.
func TestWebhookLeaderOnly(t *testing.T) {
	var posts atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		posts.Add(1)
	}))
	defer srv.Close()
	w := startWebhook(t, srv.URL, Config{Timeout: 2 * time.Second}, 8)
	w.active.Store(false)
	w.OnEvent(testEvent(1)) // not the leader: not sent

	ctx, cancel := context.WithCancel(context.Background())
	lead := make(chan struct{})
	go func() { w.WhileLeader(ctx); close(lead) }()
	testwait.For(t, "leadership to enable the webhook", 10*time.Second, w.active.Load)
	w.OnEvent(testEvent(2))
	testwait.For(t, "the leader's event", 10*time.Second, func() bool { return w.delivered.Load() == 1 })
	cancel()
	<-lead
	w.OnEvent(testEvent(3)) // leadership lost: not sent
	if w.active.Load() || len(w.queue) != 0 || w.dropped.Load() != 0 {
		t.Fatalf("after leadership: active %v, queued %d, dropped %d", w.active.Load(), len(w.queue), w.dropped.Load())
	}
	if n := posts.Load(); n != 1 {
		t.Errorf("%d POSTs, want 1 (the leader's event only)", n)
	}
}
