// Package webhook POSTs dst-up/dst-down events to an HTTP receiver (the
// events key, docs/configuration.md). It is a sink of the
// set actors' OnEvent hook: it queues without blocking and sends from one
// goroutine, retrying with backoff, while this node leads.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Config is the events key: where dst-up/dst-down events are sent.
type Config struct {
	WebhookURL string        `yaml:"webhook_url"` // http(s) URL each event is POSTed to; "" = none
	Timeout    time.Duration `yaml:"timeout"`     // per attempt
	Retries    int           `yaml:"retries"`     // further attempts after a failed one
}

const (
	// QueueSize bounds the events waiting for the sender; beyond it
	// events are dropped rather than slowing the set actors.
	QueueSize = 1024
	// webhookBackoff is the pause before the first retry; it doubles for
	// each further one, up to webhookMaxBackoff.
	webhookBackoff    = 250 * time.Millisecond
	webhookMaxBackoff = 10 * time.Second
	// MaxRetries keeps one dead receiver from holding the queue for long.
	MaxRetries = 10
)

// DefaultConfig is the events key's default: no receiver, 2 s per attempt,
// 3 retries.
func DefaultConfig() Config { return Config{Timeout: 2 * time.Second, Retries: 3} }

// Validate reports every bad field of the events key, each error starting
// with its key path ("events.timeout: ..."); a password in the URL is never
// shown.
func (e *Config) Validate() error {
	var errs []error
	bad := func(path string, v any, why string) { errs = append(errs, fmt.Errorf("%s: %v: %s", path, v, why)) }
	if e.WebhookURL != "" {
		if u, err := parseWebhookURL(e.WebhookURL); err != nil {
			shown := `"..."` // an unparsable URL may hold a password
			if u != nil {
				shown = strconv.Quote(u.Redacted())
			}
			bad("events.webhook_url", shown, err.Error())
		}
	}
	if e.Timeout <= 0 {
		bad("events.timeout", e.Timeout, "must be > 0")
	}
	if e.Retries < 0 || e.Retries > MaxRetries {
		bad("events.retries", e.Retries, "must be 0.."+strconv.Itoa(MaxRetries))
	}
	return errors.Join(errs...)
}

// parseWebhookURL accepts an absolute http or https URL. On an error the URL
// is returned too when it parsed, so the caller can show it redacted; the
// error itself never repeats the URL.
func parseWebhookURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the URL, password included: keep only the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return u, errors.New("want an http:// or https:// URL with a host")
	}
	return u, nil
}

// event is the JSON body of one POST.
type event struct {
	Event    string `json:"event"` // dst-up or dst-down
	Set      int    `json:"set"`
	URI      string `json:"uri"`
	DUID     string `json:"duid"`
	OldFlags string `json:"old_flags"` // state letters as dispatcher.list prints them
	NewFlags string `json:"new_flags"`
	Time     string `json:"time"` // RFC 3339, UTC
}

// Sender POSTs destination events to events.webhook_url. OnEvent only
// queues (the set actors call it and must never wait); one sender goroutine
// (run) delivers in order, retrying with backoff, and drops an event when
// the queue is full or its retries are spent.
type Sender struct {
	url       string
	redacted  string // for logs
	userAgent string
	client    *http.Client
	retries   int
	backoff   time.Duration // first retry pause
	queue     chan event
	log       *slog.Logger

	// delivered and dropped count events, for logs and tests.
	delivered, dropped atomic.Uint64

	// active: events are sent only while this node leads. Every node
	// applies the same commands and sees the same events, and the receiver
	// wants each once; WhileLeader sets it after raft's barrier, so neither a
	// log replayed at start nor a follower's copy is sent.
	active atomic.Bool
}

// descWebhookEvents counts the webhook's events by how they ended.
var descWebhookEvents = prometheus.NewDesc("sipdispatch_webhook_events_total",
	"Destination events POSTed to events.webhook_url (delivered) or given up (dropped: queue full or retries spent).",
	[]string{"result"}, nil)

// Describe implements prometheus.Collector.
func (w *Sender) Describe(ch chan<- *prometheus.Desc) { ch <- descWebhookEvents }

// Collect implements prometheus.Collector.
func (w *Sender) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descWebhookEvents, prometheus.CounterValue, float64(w.delivered.Load()), "delivered")
	ch <- prometheus.MustNewConstMetric(descWebhookEvents, prometheus.CounterValue, float64(w.dropped.Load()), "dropped")
}

// WhileLeader is the webhook's leader work (cluster.Node.OnLeadership): it
// enables sending until the leadership ends. An event applied between two
// leaderships (an election in progress) is sent by no node.
func (w *Sender) WhileLeader(ctx context.Context) {
	w.active.Store(true)
	<-ctx.Done()
	w.active.Store(false)
}

// New builds the sender of a validated events config; queue bounds the
// events waiting for delivery (QueueSize in production), userAgent is the
// User-Agent header of each POST. Run delivers; OnEvent queues only while
// WhileLeader runs.
func New(c Config, queue int, userAgent string, log *slog.Logger) (*Sender, error) {
	u, err := parseWebhookURL(c.WebhookURL)
	if err != nil {
		return nil, fmt.Errorf("events.webhook_url: %w", err)
	}
	return &Sender{
		url:       c.WebhookURL,
		redacted:  u.Redacted(),
		userAgent: userAgent,
		client:    &http.Client{Timeout: c.Timeout},
		retries:   c.Retries,
		backoff:   webhookBackoff,
		queue:     make(chan event, queue),
		log:       log,
	}, nil
}

// OnEvent queues ev for delivery without blocking; a full queue drops it.
func (w *Sender) OnEvent(ev dispatch.Event) {
	if !w.active.Load() {
		return
	}
	e := event{
		Event: eventKind(ev), Set: ev.SetID, URI: ev.URI, DUID: ev.DUID,
		OldFlags: ev.Old.Letters(), NewFlags: ev.New.Letters(),
		Time: ev.At.UTC().Format(time.RFC3339Nano),
	}
	select {
	case w.queue <- e:
	default:
		n := w.dropped.Add(1)
		w.log.Warn("webhook queue full: event dropped", "event", e.Event, "set", e.Set, "uri", e.URI, "dropped_total", n)
	}
}

// Run delivers queued events until ctx ends; what is still queued then is
// not sent.
func (w *Sender) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-w.queue:
			w.deliver(ctx, e)
		}
	}
}

// deliver POSTs one event, retrying up to w.retries times with doubling pauses.
func (w *Sender) deliver(ctx context.Context, e event) {
	body, err := json.Marshal(e)
	if err != nil {
		w.log.Error("webhook: event not encodable", "err", err)
		return
	}
	pause := w.backoff
	for attempt := 0; ; attempt++ {
		err = w.post(ctx, body)
		if err == nil {
			w.delivered.Add(1)
			return
		}
		if attempt == w.retries || ctx.Err() != nil {
			break
		}
		w.log.Debug("webhook attempt failed; retrying", "url", w.redacted, "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(pause):
		}
		pause = min(2*pause, webhookMaxBackoff)
	}
	n := w.dropped.Add(1)
	w.log.Warn("webhook failed: event dropped", "url", w.redacted, "event", e.Event, "set", e.Set, "uri", e.URI,
		"attempts", w.retries+1, "err", err, "dropped_total", n)
}

func (w *Sender) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", w.userAgent)
	resp, err := w.client.Do(req)
	if err != nil {
		// url.Error names the URL; show it without a password.
		var ue *url.Error
		if errors.As(err, &ue) {
			return ue.Err
		}
		return err
	}
	// Read a little of the body so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

// eventKind names an event as Kamailio's event routes do.
func eventKind(ev dispatch.Event) string {
	if ev.Up {
		return "dst-up"
	}
	return "dst-down"
}
