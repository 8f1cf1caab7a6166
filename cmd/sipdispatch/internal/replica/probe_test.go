package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/testwait"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// probeClusterFake is a probeCluster with a fixed member list and leadership,
// recording broadcasts.
type probeClusterFake struct {
	members []cluster.Member
	leader  bool
	err     error // returned by Broadcast

	mu   sync.Mutex
	sent map[string][]byte // guarded by mu: name → payload
}

func (f *probeClusterFake) Members() []cluster.Member { return f.members }
func (f *probeClusterFake) IsLeader() bool            { return f.leader }
func (f *probeClusterFake) Broadcast(name string, payload []byte) error {
	if f.err != nil {
		return f.err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent == nil {
		f.sent = map[string][]byte{}
	}
	f.sent[name] = payload
	return nil
}

// probeSinkFake records what reached the registry.
type probeSinkFake struct {
	mu  sync.Mutex
	got []probeReport // guarded by mu
}

func (s *probeSinkFake) ReportProbe(setID int, uri string, res dispatch.ProbeResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, probeReport{Set: setID, URI: uri, Result: res})
}

func alive(name string) cluster.Member {
	return cluster.Member{Name: name, State: cluster.StateAlive, RaftID: name}
}

func targetsOf(t *testing.T, set int, uris ...string) []actors.ProbeTarget {
	t.Helper()
	var out []actors.ProbeTarget
	for _, d := range testDests(t, uris...) {
		out = append(out, actors.ProbeTarget{SetID: set, Dest: d})
	}
	return out
}

func TestLiveProbers(t *testing.T) {
	members := []cluster.Member{
		alive("n1"),
		alive("n2"),
		{Name: "n3", State: cluster.StateDead, RaftID: "n3"},
		{Name: "n4", State: cluster.StateLeft, RaftID: "n4"},
		{Name: "stray", State: cluster.StateAlive}, // no raft id: not a node of this cluster
		alive("n5"),
	}
	for _, tc := range []struct {
		self string
		want []string
	}{
		{"n1", []string{"n1", "n2", "n5"}},
		{"n5", []string{"n5", "n1", "n2"}},
		{"n3", []string{"n3", "n1", "n2", "n5"}}, // a node gossip calls dead still counts itself
	} {
		if got := liveProbers(members, tc.self); !slices.Equal(got, tc.want) {
			t.Errorf("liveProbers(self %s) = %q, want %q", tc.self, got, tc.want)
		}
	}
	if got := liveProbers(nil, "n1"); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("liveProbers with no gossip = %q, want only self", got)
	}
}

// The three nodes' shares are disjoint and cover every target; a gateway in
// two sets falls to one node; a dead node's share goes to the others.
func TestOwnedTargetsPartition(t *testing.T) {
	var uris []string
	for i := range 60 {
		uris = append(uris, fmt.Sprintf("sip:10.0.0.%d:5060", i+1))
	}
	targets := append(targetsOf(t, 1, uris...), targetsOf(t, 2, uris[:10]...)...)
	nodes := []string{"n1", "n2", "n3"}
	members := []cluster.Member{alive("n1"), alive("n2"), alive("n3")}

	owner := map[string]string{} // "set/uri" → node
	uriOwner := map[string]string{}
	for _, n := range nodes {
		mine := ownedTargets(targets, n, liveProbers(members, n))
		if len(mine) == 0 || len(mine) == len(targets) {
			t.Errorf("%s owns %d of %d targets", n, len(mine), len(targets))
		}
		for _, tg := range mine {
			k := fmt.Sprintf("%d/%s", tg.SetID, tg.Dest.URI)
			if o, dup := owner[k]; dup {
				t.Fatalf("%s probed by both %s and %s", k, o, n)
			}
			owner[k] = n
			if o, ok := uriOwner[tg.Dest.URI]; ok && o != n {
				t.Errorf("gateway %s is probed by %s in one set and %s in another", tg.Dest.URI, o, n)
			}
			uriOwner[tg.Dest.URI] = n
		}
	}
	if len(owner) != len(targets) {
		t.Fatalf("%d of %d targets have an owner", len(owner), len(targets))
	}

	// n3 dies: n1 and n2 keep what they had and share n3's.
	members[2].State = cluster.StateDead
	after := map[string]string{}
	for _, n := range nodes[:2] {
		for _, tg := range ownedTargets(targets, n, liveProbers(members, n)) {
			after[fmt.Sprintf("%d/%s", tg.SetID, tg.Dest.URI)] = n
		}
	}
	if len(after) != len(targets) {
		t.Fatalf("after n3 died %d of %d targets have an owner", len(after), len(targets))
	}
	for k, was := range owner {
		if was != "n3" && after[k] != was {
			t.Errorf("%s moved from %s to %s although only n3 died", k, was, after[k])
		}
	}
}

// ProbeOwner, which the console shows, names the node whose rounds probe
// each target, as seen from any node.
func TestProbeOwnerMatchesOwnedTargets(t *testing.T) {
	targets := targetsOf(t, 1, "sip:10.0.0.1", "sip:10.0.0.2", "sip:10.0.0.3", "sip:10.0.0.4", "sip:10.0.0.5", "sip:10.0.0.6")
	members := []cluster.Member{alive("n1"), alive("n2"), alive("n3")}
	for _, n := range []string{"n1", "n2", "n3"} {
		mine := map[string]bool{}
		for _, tg := range ownedTargets(targets, n, liveProbers(members, n)) {
			mine[tg.Dest.URI] = true
		}
		for _, viewer := range []string{"n1", "n2"} {
			r := NewProbeRelay(viewer, &probeClusterFake{members: members}, &probeSinkFake{}, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
			for _, tg := range targets {
				if got := r.ProbeOwner(&tg.Dest); (got == n) != mine[tg.Dest.URI] {
					t.Errorf("seen from %s, %s is probed by %s; %s's own rounds say mine=%v", viewer, tg.Dest.URI, got, n, mine[tg.Dest.URI])
				}
			}
		}
	}
}

func newTestRelay(fc *probeClusterFake, sink *probeSinkFake) *ProbeRelay {
	return NewProbeRelay("n1", fc, sink, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
}

func probeCount(r *ProbeRelay, event string) float64 {
	return testutil.ToFloat64(r.count.WithLabelValues(event))
}

func TestProbeRelayReport(t *testing.T) {
	res := dispatch.ProbeResult{Code: 200, RTT: 12 * time.Millisecond}

	// The leader proposes its own results and gossips nothing.
	fc, sink := &probeClusterFake{leader: true}, &probeSinkFake{}
	r := newTestRelay(fc, sink)
	r.report(1, "sip:10.0.0.1", res)
	if len(sink.got) != 1 || sink.got[0] != (probeReport{1, "sip:10.0.0.1", res}) || len(fc.sent) != 0 {
		t.Fatalf("leader: sink %v, gossiped %d", sink.got, len(fc.sent))
	}
	if probeCount(r, probeProposedLocal) != 1 {
		t.Errorf("proposed_local = %v, want 1", probeCount(r, probeProposedLocal))
	}

	// A follower gossips them; the payload decodes to the result.
	fc, sink = &probeClusterFake{}, &probeSinkFake{}
	r = newTestRelay(fc, sink)
	r.report(2, "sip:10.0.0.2;transport=tcp", dispatch.ProbeResult{Timeout: true})
	r.report(2, "sip:10.0.0.2;transport=tcp", res) // the newer result for the gateway replaces the older
	if len(sink.got) != 0 || len(fc.sent) != 1 {
		t.Fatalf("follower: sink %v, gossiped %d names", sink.got, len(fc.sent))
	}
	for name, b := range fc.sent {
		if name != probeBroadcastName(2, "sip:10.0.0.2;transport=tcp") {
			t.Errorf("broadcast name %q", name)
		}
		p, err := decodeProbeReport(b)
		if err != nil || p != (probeReport{2, "sip:10.0.0.2;transport=tcp", res}) {
			t.Errorf("gossiped %+v, %v", p, err)
		}
	}
	if probeCount(r, probeGossiped) != 2 {
		t.Errorf("gossiped = %v, want 2", probeCount(r, probeGossiped))
	}

	// A broadcast that fails is counted, not retried.
	fc = &probeClusterFake{err: cluster.ErrNotStarted}
	r = newTestRelay(fc, &probeSinkFake{})
	r.report(1, "sip:10.0.0.1", res)
	r.report(1, "sip:"+strings.Repeat("a", maxProbeReport), res)
	if probeCount(r, probeGossipError) != 2 {
		t.Errorf("gossip_error = %v, want 2", probeCount(r, probeGossipError))
	}
}

func TestProbeRelayReceive(t *testing.T) {
	res := dispatch.ProbeResult{Code: 503, RTT: time.Millisecond}
	b, err := encodeProbeReport(probeReport{Set: 3, URI: "sip:gw.example.com", Result: res})
	if err != nil {
		t.Fatal(err)
	}

	fc, sink := &probeClusterFake{leader: true}, &probeSinkFake{}
	r := newTestRelay(fc, sink)
	r.Receive("n2", b)
	r.Receive("n2", []byte{probeReportV1, 0xc1}) // malformed
	r.Receive("n2", []byte("x-other-kind"))      // another gossip user's payload
	r.Receive("n2", nil)
	if len(sink.got) != 1 || sink.got[0] != (probeReport{3, "sip:gw.example.com", res}) {
		t.Fatalf("leader received %v", sink.got)
	}
	if probeCount(r, probeProposedRelayed) != 1 || probeCount(r, probeMalformed) != 1 {
		t.Errorf("proposed_relayed %v, malformed %v; want 1, 1", probeCount(r, probeProposedRelayed), probeCount(r, probeMalformed))
	}

	// A follower proposes nothing it hears.
	fc.leader = false
	r.Receive("n2", b)
	if len(sink.got) != 1 || probeCount(r, probeIgnored) != 1 {
		t.Errorf("follower passed a result on: sink %v, ignored %v", sink.got, probeCount(r, probeIgnored))
	}
}

func TestProbeReportCodec(t *testing.T) {
	for _, p := range []probeReport{
		{Set: 0, URI: "sip:10.0.0.1", Result: dispatch.ProbeResult{Timeout: true}},
		{Set: 1<<31 - 1, URI: "sips:gw.example.com:5061;transport=tls", Result: dispatch.ProbeResult{Code: 200, RTT: 3 * time.Second}},
	} {
		b, err := encodeProbeReport(p)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := decodeProbeReport(b); err != nil || got != p {
			t.Errorf("round trip of %+v: %+v, %v", p, got, err)
		}
	}
	if _, err := encodeProbeReport(probeReport{Set: 1, URI: "sip:" + strings.Repeat("x", maxProbeReport)}); !errors.Is(err, cluster.ErrTooLarge) {
		t.Errorf("oversized report: %v, want ErrTooLarge", err)
	}
	cmd := func(c dispatch.Command) []byte {
		b, err := dispatch.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		return append([]byte{probeReportV1}, b...)
	}
	for name, b := range map[string][]byte{
		"empty":        nil,
		"wrong kind":   {'q', 1},
		"garbage":      {probeReportV1, 0xff, 0xff},
		"mark command": cmd(dispatch.Command{Kind: dispatch.CmdMark, Set: 1, URI: "sip:a"}),
		"no uri":       cmd(dispatch.Command{Kind: dispatch.CmdProbe, Set: 1}),
		"any set":      cmd(dispatch.Command{Kind: dispatch.CmdProbe, Set: -1, URI: "sip:a"}),
		"negative rtt": cmd(dispatch.Command{Kind: dispatch.CmdProbe, Set: 1, URI: "sip:a", Probe: dispatch.ProbeResult{Code: 200, RTT: -1}}),
		"too large":    append([]byte{probeReportV1}, make([]byte, maxProbeReport)...),
	} {
		if _, err := decodeProbeReport(b); !errors.Is(err, errProbeReport) {
			t.Errorf("%s: %v, want errProbeReport", name, err)
		}
	}
}

func FuzzDecodeProbeReport(f *testing.F) {
	for _, p := range []probeReport{
		{Set: 1, URI: "sip:10.0.0.1:5060", Result: dispatch.ProbeResult{Code: 200, RTT: time.Millisecond}},
		{Set: 7, URI: "sip:gw;transport=tcp", Result: dispatch.ProbeResult{Timeout: true}},
	} {
		b, err := encodeProbeReport(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{probeReportV1, 1, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodeProbeReport(b)
		if err != nil {
			if !errors.Is(err, errProbeReport) {
				t.Fatalf("error does not wrap errProbeReport: %v", err)
			}
			return
		}
		b2, err := encodeProbeReport(p)
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", p, err)
		}
		if p2, err := decodeProbeReport(b2); err != nil || p2 != p {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, p, p2)
		}
	})
}

// ProbeGate: a single node probes every due destination and reports into
// its registry; with a relay it probes its share only.
func TestPingGateProbeShare(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	cfg.ProbingMode = 1 // probe every destination
	cfg.PingInterval = 1
	var uris []string
	for i := range 30 {
		uris = append(uris, fmt.Sprintf("sip:10.0.1.%d:5060", i+1))
	}
	reg, err := actors.NewRegistry(&cfg, dispatch.BuildSets(testDests(t, uris...)), actors.Options{Seed: 1, Logger: discardLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	ctx := context.Background()

	single := &ProbeGate{Registry: reg}
	all, err := single.ProbeTargets(ctx)
	if err != nil || len(all) != len(uris) {
		t.Fatalf("single node: %d targets, %v; want %d", len(all), err, len(uris))
	}
	single.ReportProbe(1, uris[0], dispatch.ProbeResult{Timeout: true})
	testwait.For(t, "the timeout to mark the destination", 5*time.Second, func() bool {
		return !strings.HasPrefix(flagsOf(t, reg)[uris[0]], "A")
	})

	fc := &probeClusterFake{members: []cluster.Member{alive("n1"), alive("n2"), alive("n3")}}
	clustered := &ProbeGate{Registry: reg, Relay: newTestRelay(fc, &probeSinkFake{})}
	mine, err := clustered.ProbeTargets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := ownedTargets(all, "n1", []string{"n1", "n2", "n3"})
	if len(mine) == 0 || len(mine) >= len(all) || len(mine) != len(want) {
		t.Fatalf("n1 of three: %d of %d targets, want its share %d", len(mine), len(all), len(want))
	}
	if got := testutil.ToFloat64(clustered.Relay.ownedGauge); got != float64(len(mine)) {
		t.Errorf("owned gauge %v, want %d", got, len(mine))
	}
	clustered.SetPingActive(0)
	if off, _ := clustered.ProbeTargets(ctx); len(off) != 0 {
		t.Errorf("ping_active 0: %d targets", len(off))
	}
}
