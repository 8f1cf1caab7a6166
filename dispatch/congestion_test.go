package dispatch

import "testing"

// TestCongestionControl is alg 11 with cc=1 (Kamailio's ds_update_latency):
// after a keepalive, each cc destination's relative weight is its weight
// less its congestion (latency estimate above the mean, ms); when every one
// is congested, weights go by total congestion×16 / own congestion. The
// 100-slot table follows; a set where one destination lacks cc=1 keeps its
// table until a state change, and without latency stats cc does nothing.
func TestCongestionControl(t *testing.T) {
	const list = "1 sip:10.0.0.1 8 0 cc=1;weight=50;rweight=10\n" +
		"1 sip:10.0.0.2 8 0 cc=1;weight=50;rweight=10\n" +
		"1 sip:10.0.0.3 8 0 cc=1;weight=50;rweight=80\n"
	slots := func(s *SetState) map[string]int {
		n := map[string]int{}
		for _, j := range s.rwlist {
			n[s.Dests[j].URI]++
		}
		return n
	}
	setCongestion := func(s *SetState, cms map[string]float64) {
		for uri, c := range cms {
			i := s.Find(uri)
			s.State[i].Latency = LatencyStats{Count: latencyTrained, Avg: 100, Est: 100 + c}
		}
	}
	timeout := ProbeResult{Timeout: true}
	for _, tc := range []struct {
		name  string
		cms   map[string]float64
		want  map[string]int
		stats int
	}{
		// rweights 40, 50, 0 (set order .3, .2, .1): 50*100/90 = 55 and
		// 40*100/90 = 44 slots, the remainder going to the last one filled (.1).
		{"some congested", map[string]float64{"sip:10.0.0.1": 10.7, "sip:10.0.0.2": -5, "sip:10.0.0.3": 60}, map[string]int{"sip:10.0.0.1": 45, "sip:10.0.0.2": 55}, 1},
		// All at 0: 380*16 / 200, 120, 60 = 30, 50, 101 of 181: 16, 27, 55+2.
		{"all congested", map[string]float64{"sip:10.0.0.1": 60, "sip:10.0.0.2": 120, "sip:10.0.0.3": 200}, map[string]int{"sip:10.0.0.1": 57, "sip:10.0.0.2": 27, "sip:10.0.0.3": 16}, 1},
		// Without ds_ping_latency_stats the rweight attributes count: 10, 10, 80.
		{"no latency stats", map[string]float64{"sip:10.0.0.1": 60, "sip:10.0.0.2": 120, "sip:10.0.0.3": 200}, map[string]int{"sip:10.0.0.1": 10, "sip:10.0.0.2": 10, "sip:10.0.0.3": 80}, 0},
	} {
		s := newTestSet(t, list, func(c *Config) { c.PingLatencyStats = tc.stats; c.PingInterval = 10 })
		setCongestion(s, tc.cms)
		s.Probe(0, timeout, t0)
		if got := slots(s); !mapsEqual(got, tc.want) {
			t.Errorf("%s: slots %v, want %v", tc.name, got, tc.want)
		}
	}

	// One destination without cc=1: a keepalive that changes no state (mode
	// 1 keeps the probing flag) leaves the table alone (the rweight
	// attributes: 10, 10, 80) until a state change rebuilds it.
	s := newTestSet(t, list+"1 sip:10.0.0.4 8 0 rweight=0\n", func(c *Config) { c.PingLatencyStats, c.PingInterval, c.ProbingMode = 1, 10, 1 })
	setCongestion(s, map[string]float64{"sip:10.0.0.1": 10.7, "sip:10.0.0.2": -5, "sip:10.0.0.3": 60})
	s.Probe(s.Find("sip:10.0.0.2"), ProbeResult{Code: 200}, t0)
	if got, want := slots(s), map[string]int{"sip:10.0.0.1": 10, "sip:10.0.0.2": 10, "sip:10.0.0.3": 80}; !mapsEqual(got, want) {
		t.Errorf("mixed set after a keepalive: slots %v, want %v", got, want)
	}
	// Every destination with cc=1: the same keepalive rebuilds the table.
	all := newTestSet(t, list, func(c *Config) { c.PingLatencyStats, c.PingInterval, c.ProbingMode = 1, 10, 1 })
	setCongestion(all, map[string]float64{"sip:10.0.0.1": 10.7, "sip:10.0.0.2": -5, "sip:10.0.0.3": 60})
	all.Probe(all.Find("sip:10.0.0.2"), ProbeResult{Code: 200}, t0)
	if got, want := slots(all), map[string]int{"sip:10.0.0.1": 45, "sip:10.0.0.2": 55}; !mapsEqual(got, want) {
		t.Errorf("cc set after a keepalive: slots %v, want %v", got, want)
	}
	mark(t, s, s.Find("sip:10.0.0.4"), "d", true)
	if got := slots(s); got["sip:10.0.0.3"] != 0 || got["sip:10.0.0.1"] != 45 {
		t.Errorf("mixed set after a state change: slots %v, want the congestion weights", got)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}
