package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/api/apitest"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/metrics"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/replica"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// screenshotEnv names a directory: when set, TestWebConsole writes a PNG of
// each page there (docs/images/console-*.png are made this way, see
// docs/operations.md, "Web console").
const screenshotEnv = "SIPDISPATCH_UI_SCREENSHOTS"

// uiBackend is a node's backend as serve wires it, minus SIP: the real set
// actors and the list-file source behind reload, add and remove.
type uiBackend struct {
	*actors.Registry
	cfg *dispatch.Config
	src *source.Sources
}

func (b *uiBackend) Config() *dispatch.Config         { return b.cfg }
func (b *uiBackend) Reload(ctx context.Context) error { return b.src.Reload(ctx) }
func (b *uiBackend) Remove(ctx context.Context, set int, uri string) error {
	return b.src.Remove(ctx, set, uri)
}
func (b *uiBackend) Add(ctx context.Context, set int, uri string, f dispatch.Flags, prio int, attrs string) error {
	return b.src.Add(ctx, set, uri, f, prio, attrs)
}
func (b *uiBackend) PingActive() int       { return 1 }
func (b *uiBackend) SetPingActive(int) int { return 1 }
func (b *uiBackend) Ready() error          { return nil }

// IsLeader and Broadcast make fakeCluster the node a replica.ProbeRelay
// reads the live members from.
func (f *fakeCluster) IsLeader() bool                 { return true }
func (f *fakeCluster) Broadcast(string, []byte) error { return nil }

// uiNode starts the list file's sets in a real registry behind the API with
// the node's real metrics, a three-node cluster view and the real probe
// ownership over it; it feeds keepalive results and SIP counters until the
// test ends, as a node under traffic would.
func uiNode(t *testing.T, token string) (*httptest.Server, []dispatch.Destination) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cfg := dispatch.DefaultConfig()
	cfg.ListFile = filepath.Join("testdata", "ui", "dispatcher.list")
	cfg.HashSize = 8
	cfg.PingLatencyStats = 1
	cfg.ProbingMode = 1 // keepalives keep the probing flag, so every result counts in the RTT
	// A destination set inactive stays so while the fed keepalives succeed,
	// so the state the test reads is the one the click set.
	cfg.InactiveThreshold = 1_000_000
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	dests, err := source.Load(&cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(log)
	reg, err := actors.NewRegistry(&cfg, dispatch.BuildSets(dests), actors.Options{Seed: 1, Logger: log, OnEvent: m.OnEvent})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	src := source.New(&cfg, dests, log)
	src.SetRegistry(reg)
	b := &uiBackend{Registry: reg, cfg: &cfg, src: src}
	m.WatchDestinations(b)

	since := time.Date(2026, 12, 4, 22, 10, 0, 0, time.UTC)
	fc := &fakeCluster{
		members: []cluster.Member{
			{Name: "sbc-a", Addr: "10.1.0.11:7946", State: cluster.StateAlive, RaftID: "sbc-a", RaftAddr: "10.1.0.11:7947", Since: since},
			{Name: "sbc-b", Addr: "10.1.0.12:7946", State: cluster.StateAlive, RaftID: "sbc-b", RaftAddr: "10.1.0.12:7947", Since: since},
			{Name: "sbc-c", Addr: "10.1.0.13:7946", State: cluster.StateAlive, RaftID: "sbc-c", RaftAddr: "10.1.0.13:7947", Since: since.Add(41 * time.Minute)},
		},
		raft: cluster.RaftStatus{State: "Leader", LeaderID: "sbc-a", LeaderAddr: "10.1.0.11:7947", Term: 7,
			LastIndex: 18342, CommitIndex: 18342, AppliedIndex: 18341, Peers: []cluster.Peer{
				{ID: "sbc-a", Addr: "10.1.0.11:7947", Suffrage: "Voter"},
				{ID: "sbc-b", Addr: "10.1.0.12:7947", Suffrage: "Voter"},
				{ID: "sbc-c", Addr: "10.1.0.13:7947", Suffrage: "Voter"},
			}},
	}
	s := New(b, token, log, m.Handler(log))
	s.SetCluster(fc)
	s.SetProbeOwners(replica.NewProbeRelay("sbc-a", fc, reg, m.Registry(), log))
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	// Calls on set 1 and 2 for the load bars.
	ctx := context.Background()
	for i := range 23 {
		set := 1 + i%2
		if _, err := reg.Select(ctx, set, dispatch.AlgCallLoad, &dispatch.Request{Method: "INVITE", CallID: fmt.Sprintf("call-%d@test", i)}, 0); err != nil {
			t.Fatal(err)
		}
	}
	feedCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	go feedTraffic(feedCtx, reg, m, dests)
	return srv, dests
}

// feedTraffic reports keepalive round trips and counts SIP requests,
// replies and selections through the metrics' sip.Observer methods, every
// 100 ms until ctx ends.
func feedTraffic(ctx context.Context, reg *actors.Registry, m *metrics.Metrics, dests []dispatch.Destination) {
	rng := rand.New(rand.NewPCG(1, 2))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if n%5 == 0 {
			for i, d := range dests {
				// The last gateway stops answering: trying, then inactive.
				if i == len(dests)-1 && n > 30 {
					reg.ReportProbe(d.SetID, d.URI, dispatch.ProbeResult{Timeout: true})
					continue
				}
				rtt := time.Duration(8+6*i+rng.IntN(4+4*i)) * time.Millisecond
				if rng.IntN(8) == 0 {
					rtt += time.Duration(10+rng.IntN(30)) * time.Millisecond
				}
				reg.ReportProbe(d.SetID, d.URI, dispatch.ProbeResult{Code: 200, RTT: rtt})
			}
		}
		for range 3 + rng.IntN(4) {
			d := dests[rng.IntN(len(dests))]
			m.Request("INVITE", fmt.Sprintf("set%d", d.SetID))
			m.Selected(d.SetID, d.URI)
			m.Reply(100)
			m.Reply(200)
			m.Request("ACK", "in-dialog")
			if rng.IntN(4) == 0 {
				m.Reply(486)
			}
		}
		m.Request("BYE", "in-dialog")
		m.Request("OPTIONS", "")
		m.Reply(200)
	}
}

// chromium finds Debian's chromium; CI installs it (.ci/setup).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "/usr/bin/chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testing.Short() {
		t.Skip("chromium not installed (-short)")
	}
	t.Fatal("chromium not found: the web console test needs Debian's chromium (.ci/setup installs it)")
	return ""
}

// browser starts a headless Chromium with a fresh profile for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1440, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	t.Cleanup(func() { cancelTimeout(); cancelCtx(); cancelAlloc() })
	return ctx
}

// destFlags reads a destination's flag letters through dispatcher.list, as
// the CLI would; "" when the set has no such destination.
func destFlags(t *testing.T, url, token string, set int, uri string) string {
	t.Helper()
	code, body := apitest.Post(t, url, token, apitest.RPCBody("dispatcher.list", 1))
	var res struct {
		Result struct {
			RECORDS []struct {
				SET struct {
					ID      int
					TARGETS []struct{ DEST struct{ URI, FLAGS string } }
				}
			}
		}
	}
	if err := json.Unmarshal(body, &res); code != http.StatusOK || err != nil {
		t.Fatalf("dispatcher.list: %d %s %v", code, body, err)
	}
	for _, r := range res.Result.RECORDS {
		for _, d := range r.SET.TARGETS {
			if r.SET.ID == set && d.DEST.URI == uri {
				return d.DEST.FLAGS
			}
		}
	}
	return ""
}

// The console in a real headless Chromium against a node's real actors,
// source and metrics: a node without a token needs no login from loopback;
// with one, the login form takes the token, the sets page shows
// the list file's destinations, a click on "inactive" (confirmed) changes
// what dispatcher.list reports, a refused add shows the node's error, the
// cluster and traffic pages fill in, and a bad token brings the login back.
func TestWebConsole(t *testing.T) {
	const token = "console-test-token"
	srv, dests := uiNode(t, token)
	ctx := browser(t)
	shots := os.Getenv(screenshotEnv)

	// fail shows what the page showed: its text says why a wait failed.
	fail := func(what string, err error) {
		t.Helper()
		body, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("%s: %v; the page shows:\n%s", what, err, body)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(sel))
		if err != nil {
			t.Fatalf("text of %s: %v", sel, err)
		}
		return s
	}
	// until waits for the node to report cond, showing the page on a timeout.
	until := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				fail("waiting for "+what, errors.New("timed out after 10s"))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	poll := func(what, expr string, timeout time.Duration) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout))); err != nil {
			fail("waiting for "+what, err)
		}
	}
	shot := func(name string) {
		t.Helper()
		if shots == "" {
			return
		}
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatalf("screenshot %s: %v", name, err)
		}
		if err := os.WriteFile(filepath.Join(shots, "console-"+name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// A node without a token file serves a loopback browser with no login.
	open := httptest.NewServer(New(apitest.NewBackend(dispatch.DefaultConfig(), apitest.SmallNode()...), "", discardLog, nil))
	defer open.Close()
	do("open a node without a token", chromedp.Navigate(open.URL+"/ui/"))
	poll("its sets page without a login", `document.querySelectorAll('#sets tr[data-uri]').length === 3 &&
		document.querySelector('#login').hidden && document.querySelector('#logout').hidden`, 10*time.Second)

	// With a token the node answers 401 and the login form shows.
	do("open the console", chromedp.Navigate(srv.URL+"/ui"))
	poll("the login form", `!document.querySelector('#login').hidden`, 10*time.Second)
	// confirm() blocks the page: accept each one from another goroutine.
	var dialogs atomic.Int32
	events := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range events {
			if err != nil {
				return
			}
			dialogs.Add(1)
			// A failed accept leaves that dialog open and the step waiting
			// for it fails with the page shown; later dialogs still get accepted.
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	do("log in", chromedp.SendKeys("#token", token), chromedp.Click(`#login-form button[type="submit"]`))
	row := func(d dispatch.Destination) string {
		return fmt.Sprintf(`#sets tr[data-set="%d"][data-uri="%s"]`, d.SetID, d.URI)
	}
	poll("the sets page", fmt.Sprintf("document.querySelectorAll('#sets tr[data-uri]').length === %d", len(dests)), 15*time.Second)
	page1 := text("#sets")
	for _, d := range dests {
		if !strings.Contains(page1, d.URI) || !strings.Contains(page1, d.Attrs.DUID) {
			t.Errorf("sets page lacks %s (duid %s):\n%s", d.URI, d.Attrs.DUID, page1)
		}
	}
	if loc, err := chromedp.Run(ctx, chromedp.Location()); err != nil || strings.Contains(loc, token) {
		t.Errorf("location %q (%v): the token must not be in the URL", loc, err)
	}

	// Inactive on the first destination, through a confirm().
	target := dests[0]
	if f := destFlags(t, srv.URL, token, target.SetID, target.URI); !strings.HasPrefix(f, "A") {
		t.Fatalf("%s starts as %s, want active", target.URI, f)
	}
	do("click inactive", chromedp.Click(row(target)+" button.act-inactive"))
	until("dispatcher.list to report "+target.URI+" inactive", func() bool {
		return strings.HasPrefix(destFlags(t, srv.URL, token, target.SetID, target.URI), "I")
	})
	if dialogs.Load() == 0 {
		t.Error("the state change ran without a confirmation")
	}
	do("the inactive badge", chromedp.WaitVisible(row(target)+" .badge.st-I"))

	// A refused add shows the node's error.
	do("add a bad destination",
		chromedp.SetValue("#add-set", "1"), chromedp.SetValue("#add-uri", "sip:bad host"),
		chromedp.Click(`#add-form button[type="submit"]`))
	poll("the refusal", `!document.querySelector('#error').hidden`, 10*time.Second)
	if msg := text("#error-text"); !strings.Contains(msg, "dispatcher.add: Adding dispatcher dst failed") {
		t.Errorf("refused add shows %q", msg)
	}
	do("dismiss", chromedp.Click("#error-close"), chromedp.WaitNotVisible("#error"))
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`document.querySelector('#add-form').reset(), true`)); err != nil {
		t.Fatal(err)
	}
	if shots != "" {
		// Let the RTT sparklines gather a few points.
		poll("RTT history and a gateway down", `document.querySelectorAll('#sets svg.spark polyline').length === 4 &&
			document.querySelector('#sets svg.spark polyline').points.length >= 12 &&
			document.querySelectorAll('#sets .badge.st-I').length >= 1`, 60*time.Second)
		shot("sets")
	}

	// By duid, remove and reload, each confirmed, each seen by dispatcher.list.
	pstn1, pstn2 := dests[2], dests[3]
	do("disable by duid", chromedp.SetValue(`#sets div.set[data-set="2"] select.duid`, pstn1.Attrs.DUID),
		chromedp.Click(`#sets div.set[data-set="2"] .duid-tools button.act-disabled`))
	until("dispatcher.list to report duid "+pstn1.Attrs.DUID+" disabled", func() bool {
		return strings.HasPrefix(destFlags(t, srv.URL, token, pstn1.SetID, pstn1.URI), "D")
	})
	do("remove", chromedp.Click(row(pstn2)+" button.act-remove"))
	until("dispatcher.list without "+pstn2.URI, func() bool {
		return destFlags(t, srv.URL, token, pstn2.SetID, pstn2.URI) == ""
	})
	poll("the removed row gone", fmt.Sprintf("document.querySelectorAll('#sets tr[data-uri]').length === %d", len(dests)-1), 10*time.Second)
	do("reload", chromedp.Click("#reload"))
	until("dispatcher.list with "+pstn2.URI+" again", func() bool {
		return destFlags(t, srv.URL, token, pstn2.SetID, pstn2.URI) != ""
	})
	if n := dialogs.Load(); n != 5 { // inactive, add, duid, remove, reload
		t.Errorf("%d confirmations for 5 actions", n)
	}

	do("the cluster page", chromedp.Click(`#nav a[data-page="cluster"]`), chromedp.WaitVisible(`#cluster table`))
	poll("probe owners", `document.querySelector('#cluster').textContent.includes('probed by')`, 10*time.Second)
	page2 := text("#cluster")
	for _, want := range []string{"Leader", "sbc-b", "alive", "18342", "pending load commands"} {
		if !strings.Contains(page2, want) {
			t.Errorf("cluster page lacks %q:\n%s", want, page2)
		}
	}
	shot("cluster")

	do("the traffic page", chromedp.Click(`#nav a[data-page="traffic"]`))
	poll("a request rate", `[...document.querySelectorAll('#traffic td.rate')].some(td => parseFloat(td.textContent) > 0)`, 10*time.Second)
	page3 := text("#traffic")
	for _, want := range []string{"INVITE", "2xx", dests[0].URI} {
		if !strings.Contains(page3, want) {
			t.Errorf("traffic page lacks %q:\n%s", want, page3)
		}
	}
	if shots != "" {
		poll("rate history", `(document.querySelector('#traffic svg.spark polyline') || {points: []}).points.length >= 15`, 40*time.Second)
		shot("traffic")
	}

	// A bad token: the node refuses it and the login form comes back.
	do("log out", chromedp.Click("#logout"), chromedp.WaitVisible("#login-form"))
	do("bad token", chromedp.SendKeys("#token", "wrong-token"), chromedp.Click(`#login-form button[type="submit"]`))
	poll("the login form again", `document.querySelector('#login-msg').textContent.includes('refused') &&
		!document.querySelector('#login').hidden`, 10*time.Second)
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`String(sessionStorage.getItem('sipdispatch.token'))`))
	if err != nil || stored != "null" {
		t.Errorf("session storage after a refused token: %q %v", stored, err)
	}
	shot("login")
}

// The console's files are served without auth (they hold no state), with
// headers that keep them from being framed or cached stale.
func TestWebConsoleFiles(t *testing.T) {
	f := apitest.NewBackend(dispatch.DefaultConfig())
	srv := httptest.NewServer(New(f, "tok", discardLog, nil))
	defer srv.Close()
	for _, p := range []string{"/ui/", "/ui/app.js", "/ui/style.css"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("X-Frame-Options") != "DENY" ||
			!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("%s: %d %v", p, resp.StatusCode, resp.Header)
		}
	}
	code, _ := apitest.Request(t, http.MethodGet, srv.URL+"/ui/missing.js", "", nil)
	if code != http.StatusNotFound {
		t.Errorf("/ui/missing.js: %d, want 404", code)
	}
	// The page's data still needs the token.
	if code, _ := apitest.Post(t, srv.URL, "", apitest.RPCBody("dispatcher.list", 1)); code != http.StatusUnauthorized {
		t.Errorf("/RPC without token: %d", code)
	}
}
