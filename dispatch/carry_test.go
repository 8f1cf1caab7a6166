package dispatch

import (
	"testing"
	"time"
)

func mark(t *testing.T, s *SetState, i int, state string, direct bool) {
	t.Helper()
	op, err := ParseMarkState(state)
	if err != nil {
		t.Fatal(err)
	}
	op.Direct = direct
	s.Mark(i, op, t0)
}

func TestCarryOverByDUID(t *testing.T) {
	tweak := func(c *Config) { c.HashSize, c.ProbingThreshold = 8, 3 }
	old := newTestSet(t, "1 sip:10.0.0.1 0 0 duid=a\n1 sip:10.0.0.2 0 0 duid=b\n1 sip:10.0.0.3 0 0 duid=c\n", tweak)
	ia, ib, ic := old.FindDUID("a"), old.FindDUID("b"), old.FindDUID("c")
	mark(t, old, ia, "ip", true) // a: inactive, probing
	mark(t, old, ib, "t", false) // b: one failure counted
	old.State[ic].Latency = LatencyStats{Count: 5, Avg: 12}
	for id, i := range map[string]int{"x1": ia, "x2": ib, "x3": ib, "x4": ic} {
		if err := old.LoadAdd(id, i, t0); err != nil {
			t.Fatal(err)
		}
	}
	old.LoadConfirm("x2", t0.Add(time.Minute))

	// Reload: a moved to a new URI (same duid), b unchanged, c gone, d new.
	s := newTestSet(t, "1 sip:10.0.0.9 0 5 duid=a\n1 sip:10.0.0.2 0 0 duid=b\n1 sip:10.0.0.4 0 0 duid=d\n", tweak)
	dropped := s.CarryOver(old)
	if dropped != 1 {
		t.Errorf("dropped %d load entries, want 1 (x4 on vanished c)", dropped)
	}
	na, nb, nd := s.FindDUID("a"), s.FindDUID("b"), s.FindDUID("d")
	if got := s.State[na].Flags.Letters(); got != "IP" {
		t.Errorf("a: %s, want IP carried over", got)
	}
	if st := s.State[nb]; st.Flags.Letters() != "TX" || st.Failures != 1 {
		t.Errorf("b: %s failures %d, want TX with 1 failure", st.Flags.Letters(), st.Failures)
	}
	if st := s.State[nd]; st.Flags != 0 || st.Load != 0 {
		t.Errorf("new d: %+v", st)
	}
	if s.State[na].Load != 1 || s.State[nb].Load != 2 {
		t.Errorf("loads a %d b %d, want 1 2", s.State[na].Load, s.State[nb].Load)
	}
	checkLoads(t, s)
	es := s.LoadEntries(nil)
	if len(es) != 3 || es[1].CallID != "x2" || !es[1].Confirmed || es[1].Dest != nb {
		t.Errorf("entries %+v", es)
	}
	// Two more failures reach the threshold: the carried count counts.
	mark(t, s, nb, "t", false)
	if _, ok := s.Mark(nb, MarkOp{Set: FlagTrying, Clear: markable}, t0); !ok || s.State[nb].Flags.Letters() != "IX" {
		t.Errorf("b after 3 failures: %s", s.State[nb].Flags.Letters())
	}
	// old is untouched.
	if old.LoadCount() != 4 || old.State[ia].Flags.Letters() != "IP" {
		t.Error("CarryOver changed old")
	}
}

func TestCarryOverByURI(t *testing.T) {
	old := newTestSet(t, "2 sip:10.0.0.1\n2 sip:10.0.0.2;transport=tcp 0 3\n", nil)
	i2 := old.Find("sip:10.0.0.2;transport=tcp")
	mark(t, old, i2, "d", true)
	old.State[i2].Latency = LatencyStats{Count: 3, Avg: 7, Max: 9}
	if err := old.LoadAdd("c", i2, t0); err != nil {
		t.Fatal(err)
	}
	// Same URIs, new order (priorities changed), plus a third.
	s := newTestSet(t, "2 sip:10.0.0.3 0 9\n2 sip:10.0.0.2;transport=tcp 0 1\n2 sip:10.0.0.1 0 5\n", nil)
	if s.CarryOver(old) != 0 {
		t.Error("dropped entries")
	}
	n2 := s.Find("sip:10.0.0.2;transport=tcp")
	if st := s.State[n2]; st.Flags.Letters() != "DX" || st.Load != 1 || st.Latency.Avg != 7 || st.Latency.Max != 9 {
		t.Errorf("carried state %+v", st)
	}
	if s.State[s.Find("sip:10.0.0.1")].Flags != 0 || s.State[s.Find("sip:10.0.0.3")].Flags != 0 {
		t.Error("other destinations changed")
	}
	checkLoads(t, s)
}

// TestCarryOverEditedFlagsWin: a line whose flags changed in the source takes
// the new flags; config bits always come from the new source.
func TestCarryOverEditedFlagsWin(t *testing.T) {
	old := newTestSet(t, "1 sip:10.0.0.1 0 0 duid=a\n1 sip:10.0.0.2 0 0 duid=b\n", nil)
	mark(t, old, old.FindDUID("a"), "i", true)
	mark(t, old, old.FindDUID("b"), "i", true)
	s := newTestSet(t, "1 sip:10.0.0.1 4 0 duid=a\n1 sip:10.0.0.2 0 0 duid=b\n", nil) // a disabled in the file
	s.CarryOver(old)
	if got := s.State[s.FindDUID("a")].Flags.Letters(); got != "DX" {
		t.Errorf("edited line: %s, want the file's DX", got)
	}
	if got := s.State[s.FindDUID("b")].Flags.Letters(); got != "IX" {
		t.Errorf("unchanged line: %s, want runtime IX", got)
	}

	old = newTestSet(t, "1 sip:10.0.0.1 0\n", nil)
	mark(t, old, 0, "ip", true)
	s = newTestSet(t, "1 sip:10.0.0.1 0\n", nil)
	s.State[0].Flags |= FlagNoPing // as if the new source had it; source flags equal
	s.CarryOver(old)
	if s.State[0].Flags != FlagInactive|FlagProbing {
		t.Errorf("flags %d: config bits must come from the new source's flags column", s.State[0].Flags)
	}
}

// TestCarryOverDuplicateKeys: a URI listed twice keeps both states, in order.
func TestCarryOverDuplicateKeys(t *testing.T) {
	old := newTestSet(t, "1 sip:10.0.0.1 0 1\n1 sip:10.0.0.1 0 2\n", nil)
	mark(t, old, 1, "i", true) // the priority-1 copy
	if err := old.LoadAdd("c0", 0, t0); err != nil {
		t.Fatal(err)
	}
	if err := old.LoadAdd("c1", 1, t0); err != nil {
		t.Fatal(err)
	}
	s := newTestSet(t, "1 sip:10.0.0.1 0 1\n1 sip:10.0.0.1 0 2\n", nil)
	s.CarryOver(old)
	if s.State[0].Flags != 0 || s.State[1].Flags != FlagInactive || s.State[0].Load != 1 || s.State[1].Load != 1 {
		t.Errorf("states %+v", s.State)
	}
	checkLoads(t, s)
}

// TestCarryOverLatency: ds_retain_latency_stats 1 (the default) keeps a
// destination's latency statistics across a reload; 0 restarts them from the
// source (the latency attribute), as Kamailio's default does.
func TestCarryOverLatency(t *testing.T) {
	for _, retain := range []int{0, 1} {
		tweak := func(c *Config) { c.PingLatencyStats, c.RetainLatencyStats = 1, retain }
		old := newTestSet(t, "1 sip:10.0.0.1 0 0 duid=a;latency=40\n", tweak)
		old.State[0].Latency = LatencyStats{Count: 20, Avg: 12, Est: 11, Max: 30, Min: 5}
		s := newTestSet(t, "1 sip:10.0.0.1 0 0 duid=a;latency=40\n", tweak)
		s.CarryOver(old)
		want := initialLatency(s.Dests[0].Attrs)
		if retain == 1 {
			want = old.State[0].Latency
		}
		if got := s.State[0].Latency; got != want {
			t.Errorf("retain %d: latency %+v, want %+v", retain, got, want)
		}
	}
}
