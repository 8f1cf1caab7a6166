package dispatch

import (
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// newTestSet builds the state of the single set in list under a default
// config changed by tweak.
func newTestSet(t testing.TB, list string, tweak func(*Config)) *SetState {
	t.Helper()
	sets, err := ParseList(strings.NewReader(list), "t.list")
	if err != nil {
		t.Fatal(err)
	}
	if len(sets) != 1 {
		t.Fatalf("%d sets", len(sets))
	}
	cfg := DefaultConfig()
	if tweak != nil {
		tweak(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	s, err := NewSetState(sets[0], &cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseMarkState(t *testing.T) {
	I, T, D, P := FlagInactive, FlagTrying, FlagDisabled, FlagProbing
	tests := []struct {
		in   string
		want Flags
	}{
		{"a", 0}, {"A", 0}, {"1", 0}, {"ap", P}, {"1P", P},
		{"i", I}, {"I", I}, {"0", I}, {"ip", I | P}, {"IP", I | P}, {"0p", I | P}, {"pi", I | P},
		{"t", T}, {"T", T}, {"3", T}, {"tp", T | P}, {"3p", T | P},
		{"d", D}, {"D", D}, {"2", D}, {"dp", D | P},
		{"p", P}, {"P", P},
		{"ia", 0}, {"ai", I}, // 'a' drops what came before, as ds_parse_flags
	}
	for _, tt := range tests {
		op, err := ParseMarkState(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if op.Set != tt.want || op.Clear != markable || op.Direct {
			t.Errorf("%q: %+v, want Set %d", tt.in, op, tt.want)
		}
	}
	for _, bad := range []string{"", "zz", "x", "4", "i ", "ix", "01", "-1"} {
		_, err := ParseMarkState(bad)
		if !errors.Is(err, ErrUnknownState) {
			t.Errorf("%q: error %v, want ErrUnknownState", bad, err)
		}
	}
	if _, err := ParseMarkState("zz"); err.Error() != `unknown state value: "zz"` {
		t.Errorf("message %q", err)
	}
}

// step is one mark or probe and what must follow.
type step struct {
	op     string // mark state, or "ok"/"fail" for a probe
	direct bool
	want   string // Flags.Letters after the step
	event  string // "", "up" or "down"
}

func runSteps(t *testing.T, s *SetState, steps []step) {
	t.Helper()
	for n, st := range steps {
		var (
			ev Event
			ok bool
		)
		now := t0.Add(time.Duration(n) * time.Second)
		switch st.op {
		case "ok":
			ev, ok = s.Probe(0, ProbeResult{Code: 200, RTT: 10 * time.Millisecond}, now)
		case "fail":
			ev, ok = s.Probe(0, ProbeResult{Timeout: true}, now)
		default:
			op, err := ParseMarkState(st.op)
			if err != nil {
				t.Fatal(err)
			}
			op.Direct = st.direct
			ev, ok = s.Mark(0, op, now)
		}
		if got := s.State[0].Flags.Letters(); got != st.want {
			t.Fatalf("step %d (%s direct=%v): flags %s, want %s", n, st.op, st.direct, got, st.want)
		}
		gotEv := ""
		if ok {
			gotEv = "down"
			if ev.Up {
				gotEv = "up"
			}
			if ev.SetID != s.ID || ev.URI != s.Dests[0].URI || ev.DUID != s.Dests[0].Attrs.DUID ||
				ev.New != s.State[0].Flags || ev.Up == ev.New.Skip() || ev.Old.Skip() == ev.New.Skip() || !ev.At.Equal(now) {
				t.Fatalf("step %d: bad event %+v", n, ev)
			}
		}
		if gotEv != st.event {
			t.Fatalf("step %d (%s): event %q, want %q", n, st.op, gotEv, st.event)
		}
	}
}

func TestMarkThresholds(t *testing.T) {
	tests := []struct {
		name  string
		flags string // initial flags column
		steps []step
	}{
		{"trying counts to the probing threshold", "0", []step{
			{op: "t", want: "TX"}, {op: "t", want: "TX"}, {op: "t", want: "IX", event: "down"},
		}},
		{"a success resets the failure count", "0", []step{
			{op: "t", want: "TX"}, {op: "t", want: "TX"}, {op: "a", want: "AX"},
			{op: "t", want: "TX"}, {op: "t", want: "TX"}, {op: "t", want: "IX", event: "down"},
		}},
		{"inactive needs inactive_threshold successes", "1", []step{
			{op: "a", want: "IX"}, {op: "a", want: "AX", event: "up"},
		}},
		{"trying on inactive stays inactive and restarts the count", "1", []step{
			{op: "a", want: "IX"}, {op: "t", want: "IX"}, {op: "a", want: "IX"}, {op: "a", want: "AX", event: "up"},
		}},
		{"probing flag kept while still inactive", "9", []step{
			{op: "a", want: "IP"}, {op: "a", want: "AX", event: "up"},
		}},
		{"inactive mark at once", "0", []step{
			{op: "ip", want: "IP", event: "down"}, {op: "ap", want: "IP"}, {op: "ap", want: "AP", event: "up"},
		}},
		{"disabled overrides the rest and ignores failover marks", "0", []step{
			{op: "dp", want: "DX", event: "down"}, {op: "a", want: "DX"}, {op: "i", want: "DX"},
			{op: "a", direct: true, want: "AX", event: "up"},
		}},
		{"direct marks skip thresholds", "0", []step{
			{op: "t", want: "TX"},
			{op: "i", direct: true, want: "IX", event: "down"},
			{op: "a", direct: true, want: "AX", event: "up"},
			{op: "t", direct: true, want: "TX"},
			{op: "t", want: "TX"}, {op: "t", want: "TX"}, // counters were reset by the direct marks
			{op: "t", want: "IX", event: "down"},
			{op: "tp", direct: true, want: "TP", event: "up"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSet(t, "1 sip:10.0.0.2\n1 sip:10.0.0.1 "+tt.flags+" 0 duid=g1", func(c *Config) {
				c.ProbingThreshold, c.InactiveThreshold = 3, 2
			})
			runSteps(t, s, tt.steps)
		})
	}
}

func TestMarkKeepsConfigBits(t *testing.T) {
	s := newTestSet(t, "1 sip:10.0.0.1 48", nil) // no-DNS + never-ping
	for _, st := range []string{"i", "a", "dp", "t"} {
		op, _ := ParseMarkState(st)
		op.Direct = true
		s.Mark(0, op, t0)
		if s.State[0].Flags&(FlagNoDNS|FlagNoPing) != FlagNoDNS|FlagNoPing {
			t.Fatalf("after %q: flags %d lost config bits", st, s.State[0].Flags)
		}
	}
}

// TestMarkMatchesKamailioRPC replays the set_state calls of the Kamailio
// fixtures on the fixture list and compares with Kamailio's list afterwards.
func TestMarkMatchesKamailioRPC(t *testing.T) {
	// The one copy of the recorded answers lives with the API tests.
	const dir = "../cmd/sipdispatch/internal/api/testdata/kamailio-rpc/"
	f, err := os.Open(dir + "dispatcher.list")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sets, err := ParseList(f, "dispatcher.list")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	byID := map[int]*SetState{}
	for _, set := range sets {
		s, err := NewSetState(set, &cfg, rand.New(rand.NewPCG(1, 2)))
		if err != nil {
			t.Fatal(err)
		}
		byID[set.ID] = s
	}
	for _, call := range []struct {
		state string
		set   int
		uri   string
	}{{"i", 1, "sip:127.0.0.1:5082"}, {"ip", 2, "sip:127.0.0.1:5083"}} {
		op, err := ParseMarkState(call.state)
		if err != nil {
			t.Fatal(err)
		}
		op.Direct = true
		s := byID[call.set]
		i := s.Find(call.uri)
		if i < 0 {
			t.Fatalf("%s not found", call.uri)
		}
		if _, ok := s.Mark(i, op, t0); !ok {
			t.Errorf("set_state %s %s: no dst-down event", call.state, call.uri)
		}
	}
	raw, err := os.ReadFile(dir + "list_after_probing.json")
	if err != nil {
		t.Fatal(err)
	}
	var want rpcList
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	for _, rec := range want.Result.RECORDS {
		s := byID[rec.SET.ID]
		for di, tg := range rec.SET.TARGETS {
			if s.Dests[di].URI != tg.DEST.URI || s.State[di].Flags.Letters() != tg.DEST.FLAGS {
				t.Errorf("set %d #%d: %s %s, Kamailio %s %s", rec.SET.ID, di,
					s.Dests[di].URI, s.State[di].Flags.Letters(), tg.DEST.URI, tg.DEST.FLAGS)
			}
		}
	}
}

func TestProbeModes(t *testing.T) {
	tests := []struct {
		name  string
		mode  int
		flags string
		steps []step
	}{
		{"mode 1 probes all and keeps the probing flag", 1, "0", []step{
			{op: "ok", want: "AP"}, {op: "fail", want: "TP"}, {op: "fail", want: "TP"},
			{op: "fail", want: "IP", event: "down"}, {op: "fail", want: "IP"},
			{op: "ok", want: "IP"}, {op: "ok", want: "AP", event: "up"},
		}},
		{"mode 0 drops the probing flag on success, as Kamailio", 0, "8", []step{
			{op: "ok", want: "AX"},
		}},
		{"mode 0 drops the probing flag on failure, as Kamailio", 0, "8", []step{
			{op: "fail", want: "TX"},
		}},
		{"mode 0 inactive probing counts successes", 0, "9", []step{
			{op: "ok", want: "IP"}, {op: "ok", want: "AX", event: "up"},
		}},
		{"mode 2 keeps probing failed destinations", 2, "9", []step{
			{op: "fail", want: "IP"}, {op: "ok", want: "IP"}, {op: "ok", want: "AX", event: "up"},
		}},
		{"mode 3 ignores results without the probing flag", 3, "0", []step{
			{op: "fail", want: "AX"}, {op: "ok", want: "AX"},
		}},
		{"mode 3 keeps the probing flag", 3, "8", []step{
			{op: "ok", want: "AP"}, {op: "fail", want: "TP"}, {op: "fail", want: "TP"},
			{op: "fail", want: "IP", event: "down"}, {op: "ok", want: "IP"}, {op: "ok", want: "AP", event: "up"},
		}},
		{"disabled is never changed by probes", 1, "4", []step{
			{op: "ok", want: "DX"}, {op: "fail", want: "DX"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestSet(t, "1 sip:10.0.0.1 "+tt.flags, func(c *Config) {
				c.ProbingMode, c.PingInterval = tt.mode, 10
				c.ProbingThreshold, c.InactiveThreshold = 3, 2
			})
			runSteps(t, s, tt.steps)
		})
	}
}

func TestProbeReplyCodes(t *testing.T) {
	s := newTestSet(t, "1 sip:10.0.0.1 8", func(c *Config) {
		c.ProbingMode, c.PingInterval, c.ProbingThreshold = 1, 10, 1
		c.PingReplyCodes = "code=403;class=4"
	})
	for _, tc := range []struct {
		code int
		want string
	}{{403, "AP"}, {488, "AP"}, {202, "AP"}, {503, "IP"}, {200, "AP"}, {301, "IP"}, {404, "AP"}} {
		s.Probe(0, ProbeResult{Code: tc.code}, t0)
		if got := s.State[0].Flags.Letters(); got != tc.want {
			t.Errorf("reply %d: %s, want %s", tc.code, got, tc.want)
		}
	}
}

func TestParseReplyCodes(t *testing.T) {
	rc, err := ParseReplyCodes("class=2;code=403;code=488;CLASS=6;")
	if err != nil {
		t.Fatal(err)
	}
	for code, want := range map[int]bool{200: true, 299: true, 403: true, 488: true, 404: false,
		600: true, 699: true, 100: false, 503: false, 0: false} {
		if rc.Match(code) != want {
			t.Errorf("Match(%d) = %v", code, !want)
		}
	}
	empty, err := ParseReplyCodes("")
	if err != nil || empty.Match(403) || !empty.Match(200) || !empty.Match(204) {
		t.Errorf("empty codes: %v", err)
	}
	for in, want := range map[string]string{
		"code=99":    `code "99": must be 100..699`,
		"code=700":   `code "700": must be 100..699`,
		"code=abc":   `code "abc": must be 100..699`,
		"class=7":    `class "7": must be 1..6`,
		"class=0":    `class "0": must be 1..6`,
		"klass=2":    `unknown name "klass": want code= or class=`,
		"code=200,x": `unexpected ',' after "code", want ';'`,
	} {
		if _, err := ParseReplyCodes(in); err == nil || err.Error() != want {
			t.Errorf("%q: error %v, want %s", in, err, want)
		}
	}
}

func TestShouldProbe(t *testing.T) {
	//        flags: A    AP  IX  IP  DP  NoPing+P NoDNS+P TP
	flags := []Flags{0, 8, 1, 9, 12, 40, 24, 10}
	want := map[int][]bool{
		0: {false, true, false, true, false, false, false, true},
		1: {true, true, true, true, false, false, false, true},
		2: {false, false, false, true, false, false, false, false},
		3: {false, true, false, true, false, false, false, true},
	}
	for mode, w := range want {
		for i, f := range flags {
			s := newTestSet(t, "1 sip:10.0.0.1 "+strconv.Itoa(int(f)), func(c *Config) { c.ProbingMode, c.PingInterval = mode, 5 })
			if got := s.ShouldProbe(0); got != w[i] {
				t.Errorf("mode %d flags %d: %v, want %v", mode, f, got, w[i])
			}
		}
	}
	s := newTestSet(t, "1 sip:10.0.0.1 8", func(c *Config) { c.ProbingMode = 1 })
	if s.ShouldProbe(0) {
		t.Error("probing with ds_ping_interval 0")
	}
}

func TestLatencyStats(t *testing.T) {
	const alpha = 300
	s := newTestSet(t, "1 sip:10.0.0.1 8", func(c *Config) {
		c.ProbingMode, c.PingInterval, c.PingLatencyStats, c.LatencyEstimatorAlpha = 1, 10, 1, alpha
	})
	samples := []float64{10, 30, 20, 50, 40, 10, 60, 20, 30, 80, 15, 25, 35}
	var (
		sum, est float64
		lo, hi   = math.Inf(1), math.Inf(-1)
	)
	for n, x := range samples {
		s.Probe(0, ProbeResult{Code: 200, RTT: time.Duration(x) * time.Millisecond}, t0)
		sum += x
		lo, hi = min(lo, x), max(hi, x)
		k := float64(n + 1)
		mean := sum / k
		var ss float64
		for _, y := range samples[:n+1] {
			ss += (y - mean) * (y - mean)
		}
		if n+1 < 10 {
			est = mean
		} else {
			est = x*alpha/1000 + est*(1-float64(alpha)/1000)
		}
		ls := s.State[0].Latency
		if ls.Count != int64(n+1) || !near(ls.Avg, mean) || !near(ls.Est, est) || ls.Min != lo || ls.Max != hi {
			t.Fatalf("after %d samples: %+v; want avg %.3f est %.3f min %v max %v", n+1, ls, mean, est, lo, hi)
		}
		if n > 0 && !near(ls.Std, math.Sqrt(ss/(k-1))) {
			t.Fatalf("after %d samples: std %.4f, want %.4f", n+1, ls.Std, math.Sqrt(ss/(k-1)))
		}
	}
	s.Probe(0, ProbeResult{Timeout: true}, t0)
	s.Probe(0, ProbeResult{Code: 408, RTT: time.Second}, t0)
	if ls := s.State[0].Latency; ls.Timeouts != 2 || ls.Count != int64(len(samples)) {
		t.Errorf("timeouts: %+v", ls)
	}
}

func TestLatencyStatsOnlyWhenProbingAndEnabled(t *testing.T) {
	off := newTestSet(t, "1 sip:10.0.0.1 8", func(c *Config) { c.ProbingMode, c.PingInterval = 1, 10 })
	off.Probe(0, ProbeResult{Code: 200, RTT: time.Second}, t0)
	if off.State[0].Latency != (LatencyStats{}) {
		t.Errorf("stats without ds_ping_latency_stats: %+v", off.State[0].Latency)
	}
	noP := newTestSet(t, "1 sip:10.0.0.1 0", func(c *Config) { c.ProbingMode, c.PingInterval, c.PingLatencyStats = 1, 10, 1 })
	noP.Probe(0, ProbeResult{Code: 200, RTT: time.Second}, t0) // sets P, measured next time
	if noP.State[0].Latency.Count != 0 {
		t.Errorf("measured without probing flag: %+v", noP.State[0].Latency)
	}
	noP.Probe(0, ProbeResult{Code: 200, RTT: time.Second}, t0)
	if noP.State[0].Latency.Count != 1 || noP.State[0].Latency.Avg != 1000 {
		t.Errorf("second probe: %+v", noP.State[0].Latency)
	}
}

func TestLatencyTrainingAndSeed(t *testing.T) {
	s := newTestSet(t, "1 sip:10.0.0.1 8", func(c *Config) { c.ProbingMode, c.PingInterval, c.PingLatencyStats = 1, 10, 1 })
	for i := 0; i < 11; i++ {
		s.Probe(0, ProbeResult{Code: 200, RTT: 20 * time.Millisecond}, t0)
	}
	if ls := s.State[0].Latency; ls.Count != latencyTrained || ls.Avg != 20 || ls.Est != 20 {
		t.Errorf("stable samples did not train the estimator: %+v", ls)
	}
	seeded := newTestSet(t, "1 sip:10.0.0.1 8 0 latency=40", func(c *Config) {
		c.ProbingMode, c.PingInterval, c.PingLatencyStats, c.LatencyEstimatorAlpha = 1, 10, 1, 500
	})
	if ls := seeded.State[0].Latency; ls.Count != latencyTrained || ls.Avg != 40 || ls.Est != 40 || ls.Min != 40 {
		t.Fatalf("latency=40 seed: %+v", ls)
	}
	seeded.Probe(0, ProbeResult{Code: 200, RTT: 80 * time.Millisecond}, t0)
	if ls := seeded.State[0].Latency; ls.Est != 60 || ls.Max != 80 {
		t.Errorf("EWMA after seed: %+v, want est 60", ls)
	}
}

// TestLatencyEstimatorAlpha checks the EWMA against hand-computed values:
// alpha (per mille) weighs the new sample, as in Kamailio 6.1's
// latency_stats_update (est = latency*alpha + est*(1-alpha)). The latency=N
// attribute seeds a trained estimator, so every sample goes through the EWMA.
func TestLatencyEstimatorAlpha(t *testing.T) {
	for _, tc := range []struct {
		name    string
		alpha   int
		seed    string
		samples []int // ms
		want    []float64
	}{
		{"default 100: 10% of the sample", 100, "100", []int{200}, []float64{110}},
		{"default 100, two samples", 100, "100", []int{200, 200}, []float64{110, 119}},
		{"default 100, falling", 100, "200", []int{100}, []float64{190}},
		{"900 weighs the sample, not the old estimate (5.x/6.0 meaning)", 900, "100", []int{200}, []float64{190}},
		{"250", 250, "40", []int{80}, []float64{50}},
		{"500", 500, "40", []int{80, 0}, []float64{60, 30}},
		{"1000: the sample only", 1000, "100", []int{37}, []float64{37}},
		{"0: estimate frozen", 0, "100", []int{500}, []float64{100}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestSet(t, "1 sip:10.0.0.1 8 0 latency="+tc.seed, func(c *Config) {
				c.ProbingMode, c.PingInterval, c.PingLatencyStats, c.LatencyEstimatorAlpha = 1, 10, 1, tc.alpha
			})
			for i, ms := range tc.samples {
				s.Probe(0, ProbeResult{Code: 200, RTT: time.Duration(ms) * time.Millisecond}, t0)
				if got := s.State[0].Latency.Est; !near(got, tc.want[i]) {
					t.Fatalf("after sample %d (%d ms): estimate %v, want %v", i+1, ms, got, tc.want[i])
				}
			}
		})
	}
	if d := DefaultConfig().LatencyEstimatorAlpha; d != 100 {
		t.Errorf("default ds_latency_estimator_alpha %d, want 100 (Kamailio 6.1)", d)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }
