package dispatch

// The 100-slot tables below follow Kamailio's dp_init_weights,
// dp_init_relative_weights and dp_init_priority_weights: each destination's
// index fills a number of slots proportional to its weight, the slots left
// over go to one destination as Kamailio assigns them, and the table is
// shuffled so that a run of requests interleaves destinations. Selection
// then walks a cursor over the table, so every 100 requests match the
// weights exactly.

// initWeights builds what depends only on the destinations as loaded: the
// algorithm 9 table, the algorithm 14 mode and the algorithm 16 seeds.
// NewSetState calls it once.
func (s *SetState) initWeights() {
	n := len(s.Dests)
	s.wlist = make([]int, 100)
	// Kamailio builds the table only when the first destination has a
	// weight; otherwise every slot stays 0, the first entry.
	if n > 0 && s.Dests[0].Attrs.Weight != 0 {
		t := 0
	fill:
		for j := range s.Dests {
			for k := 0; k < s.Dests[j].Attrs.Weight; k++ {
				if t == 100 {
					break fill // weights past 100% are ignored
				}
				s.wlist[t] = j
				t++
			}
		}
		for ; t < 100; t++ {
			s.wlist[t] = n - 1 // the last destination takes what is left
		}
		s.shuffle100(s.wlist)
	}

	// Kamailio's rrserial: round-robin only when every priority is the same
	// positive value; 0 doubles as "serial" there.
	s.rrSerial = n > 0 && s.Dests[0].Priority > 0
	for i := range s.Dests {
		if s.Dests[i].Priority != s.Dests[0].Priority {
			s.rrSerial = false
		}
	}

	s.seeds = make([]uint64, n)
	s.anyWeight = false
	for i := range s.Dests {
		s.seeds[i] = fnv64(s.Dests[i].Key())
		if s.Dests[i].Attrs.Weight > 0 {
			s.anyWeight = true
		}
	}
}

// initRelativeWeights rebuilds the algorithm 11 table over the destinations
// that may be selected now, each getting rweight*100/sum slots (truncated)
// and the last one filled in getting the rest. With no rweight on any
// selectable destination the table points at the first entry, as a fresh
// Kamailio set does (Kamailio keeps a stale table in that case instead).
func (s *SetState) initRelativeWeights() {
	if s.rwlist == nil {
		s.rwlist = make([]int, 100)
	}
	rw := s.relativeWeights()
	sum := 0
	for i := range s.Dests {
		if !s.State[i].Flags.Skip() {
			sum += rw[i]
		}
	}
	if sum <= 0 {
		clear(s.rwlist)
		return
	}
	t := 0
	for j := range s.Dests {
		if s.State[j].Flags.Skip() {
			continue
		}
		for k := rw[j] * 100 / sum; k > 0 && t < 100; k-- {
			s.rwlist[t] = j
			t++
		}
	}
	last := len(s.Dests) - 1
	if t > 0 {
		last = s.rwlist[t-1]
	}
	for ; t < 100; t++ {
		s.rwlist[t] = last
	}
	s.shuffle100(s.rwlist)
}

// relativeWeights are algorithm 11's weights: the rweight attributes, except
// that with latency statistics on (ds_ping_latency_stats) a destination with
// cc=1 and a weight gets Kamailio's congestion-controlled weight
// (ds_update_latency): weight minus its congestion, the milliseconds its
// latency estimate runs above its mean (at least 0). When every destination
// of the set has cc=1 and more than one, and none of the weighted ones, is
// down to 0, each gets total congestion×16 / its own congestion instead, so
// the least congested take the most. Kamailio updates the probed
// destination's weight at each keepalive and the others at theirs; here all
// are recomputed from their statistics whenever the table is rebuilt.
func (s *SetState) relativeWeights() []int {
	if cap(s.rweights) < len(s.Dests) {
		s.rweights = make([]int, len(s.Dests))
	}
	rw := s.rweights[:len(s.Dests)]
	all, congested, normal, total := true, 0, 0, 0
	for i := range s.Dests {
		a := &s.Dests[i].Attrs
		rw[i] = a.RWeight
		if a.CC == 0 {
			all = false
			continue
		}
		if l := &s.State[i].Latency; s.cfg.PingLatencyStats != 1 || a.Weight <= 0 || l.Count == 0 && l.Timeouts == 0 {
			continue // not probed yet: Kamailio keeps the rweight attribute until then
		}
		cms := s.State[i].Latency.congestion()
		total += cms
		rw[i] = max(0, a.Weight-cms)
		if rw[i] == 0 {
			congested++
		} else {
			normal++
		}
	}
	if all && congested > 1 && normal == 0 {
		for i := range s.Dests {
			rw[i] = (total << 4) / max(1, s.State[i].Latency.congestion())
		}
	}
	return rw
}

// congestion is Kamailio's congestion_ms: how far the latency estimate
// runs above the mean, whole milliseconds, at least 0.
func (l *LatencyStats) congestion() int { return max(0, int(l.Est-l.Avg)) }

// initPriorityWeights rebuilds the algorithm 15 table: the best live
// priority group is the selectable destinations with the LOWEST priority
// value (DNS SRV convention, as Kamailio's algorithm 15, unlike the list
// order where higher values come first); within it slots go by weight
// percent of the group's sum, or evenly when no member has a weight (the
// last member taking the remainder). With no selectable destination the
// table points at the first entry.
func (s *SetState) initPriorityWeights() {
	if s.pwlist == nil {
		s.pwlist = make([]int, 100)
	}
	best, found := 0, false
	for i := range s.Dests {
		if !s.State[i].Flags.Skip() && (!found || s.Dests[i].Priority < best) {
			best, found = s.Dests[i].Priority, true
		}
	}
	if !found {
		clear(s.pwlist)
		return
	}
	inGroup := func(i int) bool { return !s.State[i].Flags.Skip() && s.Dests[i].Priority == best }
	sum, members, last := 0, 0, 0
	for i := range s.Dests {
		if inGroup(i) {
			sum += max(s.Dests[i].Attrs.Weight, 0)
			members++
			last = i
		}
	}
	t, seen := 0, 0
	for i := range s.Dests {
		if !inGroup(i) {
			continue
		}
		var slots int
		switch {
		case sum > 0:
			slots = max(s.Dests[i].Attrs.Weight, 0) * 100 / sum
		case seen == members-1:
			slots = 100 - t
		default:
			slots = 100 / members
		}
		seen++
		for ; slots > 0 && t < 100; slots-- {
			s.pwlist[t] = i
			t++
		}
	}
	if t > 0 {
		last = s.pwlist[t-1]
	}
	for ; t < 100; t++ {
		s.pwlist[t] = last
	}
	s.shuffle100(s.pwlist)
}

// shuffle100 mixes a 100-slot table as Kamailio's shuffle_uint100array does
// (slot j swaps with a random slot at or after it), drawing from s.rng.
func (s *SetState) shuffle100(a []int) {
	for j := range 100 {
		k := j + s.rng.IntN(100-j)
		a[j], a[k] = a[k], a[j]
	}
}
