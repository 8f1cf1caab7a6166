package dispatch

// CarryOver copies runtime state and call load from old, the set before a
// reload, into s, freshly built from the reloaded source (docs/operations.md,
// "dispatcher.reload"; Kamailio instead restarts every destination from the
// source). Destinations match by Destination.Key: duid, else set id and URI;
// when a key occurs several times the n-th old one matches the n-th new one.
//
// Which flags win: if a destination's line in the source is unchanged (same
// flags as the source old was built from), its runtime state — inactive,
// trying, disabled, probing and the failure/success counters — carries over,
// so a reload does not resurrect a dead gateway or re-enable one an operator
// disabled through the API. If the source's flags for it changed, the operator
// edited that line to change its state, so the new source flags win and the
// counters restart. The no-DNS and never-ping bits always come from the new
// source. Latency statistics carry over unless ds_retain_latency_stats is 0
// (then they restart from the source's latency attribute). Call-load
// entries, the log clock and the tombstones of ended calls always carry over.
//
// Load entries on destinations that no longer exist are dropped; CarryOver
// returns how many, for the caller to log. old is not changed.
func (s *SetState) CarryOver(old *SetState) (dropped int) {
	byKey := make(map[string][]int, len(old.Dests))
	for j := range old.Dests {
		k := old.Dests[j].Key()
		byKey[k] = append(byKey[k], j)
	}
	// newIndex[j] is the new index of old destination j, or -1.
	newIndex := make([]int, len(old.Dests))
	for j := range newIndex {
		newIndex[j] = -1
	}
	for i := range s.Dests {
		k := s.Dests[i].Key()
		olds := byKey[k]
		if len(olds) == 0 {
			continue
		}
		j := olds[0]
		byKey[k] = olds[1:]
		newIndex[j] = i

		src, st := s.Dests[i].Flags, &s.State[i]
		if old.Dests[j].Flags == src {
			st.Flags = old.State[j].Flags&markable | src&^markable
			st.Failures, st.Successes = old.State[j].Failures, old.State[j].Successes
		}
		if s.cfg.RetainLatencyStats != 0 {
			st.Latency = old.State[j].Latency
		}
	}
	for id, e := range old.load.m {
		i := newIndex[e.dest]
		if i < 0 {
			dropped++
			continue
		}
		if _, dup := s.load.m[id]; dup {
			continue // already tracked here; never count a call twice
		}
		e.dest = int32(i)
		s.load.m[id] = e
		s.State[i].Load++
	}
	// The log clock and the tombstones of ended calls belong to the set's
	// call history, not to its destinations.
	s.tick(old.load.clock)
	for id, at := range old.load.ended {
		if at > s.load.ended[id] {
			s.load.ended[id] = at
		}
	}
	s.stateChanged()
	return dropped
}
