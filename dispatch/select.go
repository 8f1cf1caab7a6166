package dispatch

import (
	"bytes"
	"fmt"
	"math"
	"time"
)

// Select chooses destinations for req with alg
// (docs/kamailio-compat.md#algorithms), following Kamailio's
// ds_select_dst_limit:
//
//   - Every algorithm but 10, 13 and 16 yields a number h, and the index is
//     h % n, where n excludes the last destination when use_default is on.
//     If that destination may not be selected, a hash algorithm (0-3, 5 with
//     a username, 7) applies hash_fallback: "next" walks to the next
//     selectable entry, wrapping, as Kamailio does; "rehash" picks among the
//     selectable entries by a rehash of h, so a dead gateway's share spreads
//     evenly. Other algorithms always walk to the next entry.
//   - With use_default the last destination is chosen only when no other
//     may be, and it ends the failover list.
//   - With Config.Flags&2 the selection carries the failover list: the
//     selectable destinations after the chosen one in set order, wrapping
//     (for algorithm 10 only those under maxload; for 13 and 16 in their own
//     ranking), then the default one.
//   - limit caps the length of the whole selection; 0 means no cap.
//
// Inactive and disabled destinations are never selected; the default one
// is left out when it is inactive too (Kamailio appends it regardless). If
// nothing may be selected the error wraps ErrNoDestination; if a hash
// algorithm finds no key in req it wraps ErrNoHashKey. Selection.Order is
// built in buf[:0], so a caller that reuses buf makes hash algorithms
// allocation-free. Select does not record call load: after algorithm 10 the
// caller records the chosen destination (a replicated CmdLoadAdd).
func (s *SetState) Select(req *Request, alg Algorithm, limit int, now time.Time, buf []int) (Selection, error) {
	return s.SelectHeld(req, alg, limit, now, buf, nil)
}

// SelectHeld is Select with held[i] calls counted on destination i on top of
// its committed load, for algorithm 10's least-loaded pick and maxload: the
// calls a node has placed whose load entries have not committed yet
// (reservations). held may be nil or shorter than Dests.
func (s *SetState) SelectHeld(req *Request, alg Algorithm, limit int, now time.Time, buf []int, held []int) (Selection, error) {
	sel := Selection{SetID: s.ID, Alg: alg, Order: buf[:0]}
	n := len(s.Dests)
	if n == 0 {
		return sel, s.errNoDest(alg)
	}
	if limit <= 0 || limit > n {
		limit = n
	}
	nh := s.hashRange()

	valg := alg
	if alg == AlgRRSerial {
		valg = AlgFirst
		if s.rrSerial {
			valg = AlgRoundRobin
		}
	}

	var h uint32
	hashed, roundRobin := false, false
	switch valg {
	case AlgHashCallID:
		h, hashed = Hash(CallIDKey(req.CallID), ""), true
	case AlgHashFrom, AlgHashTo, AlgHashRURI:
		uri, name := req.From, "From"
		if valg == AlgHashTo {
			uri, name = req.To, "To"
		} else if valg == AlgHashRURI {
			uri, name = req.RURI, "Request-URI"
		}
		user, host, ok := URIHashKeys(uri, s.cfg.Flags&FlagsHashUserOnly != 0)
		if !ok {
			return sel, fmt.Errorf("set %d: %s: %s %q: %w", s.ID, alg, name, uri, ErrNoHashKey)
		}
		h, hashed = Hash(user, host), true
	case AlgHashAuthUser:
		if user, ok := AuthUserKey(req.AuthUser); ok {
			h, hashed = Hash(user, ""), true
		} else {
			h, roundRobin = s.nextRR(), true
		}
	case AlgRoundRobin:
		h, roundRobin = s.nextRR(), true
	case AlgRandom:
		h = s.rng.Uint32()
	case AlgHashPVar:
		if s.tmpl == nil {
			return sel, fmt.Errorf("set %d: %s: hash_pvar is empty: %w", s.ID, alg, ErrNoHashKey)
		}
		s.scratch = s.tmpl.Append(s.scratch[:0], req, nil)
		key := bytes.Trim(s.scratch, sipWhitespace)
		if len(key) == 0 {
			return sel, fmt.Errorf("set %d: %s: hash_pvar expands to nothing: %w", s.ID, alg, ErrNoHashKey)
		}
		h, hashed = hashBytes(key), true
	case AlgWeight:
		h = uint32(s.wlist[s.wlast])
		s.wlast = (s.wlast + 1) % 100
	case AlgCallLoad:
		if req.Method == "INVITE" {
			return s.selectCallLoad(sel, limit, held)
		}
		// Only an INVITE starts a call; anything else takes the first entry.
	case AlgRelativeWeight:
		h = uint32(s.rwlist[s.rwlast])
		s.rwlast = (s.rwlast + 1) % 100
	case AlgLatency:
		return s.selectLatency(sel, limit)
	case AlgPriorityGroups:
		h = uint32(s.pwlist[s.pwlast])
		s.pwlast = (s.pwlast + 1) % 100
	case AlgRendezvous:
		return s.selectRendezvous(sel, req, limit)
	}
	// AlgFirst, AlgParallel and unknown algorithms start at h = 0.

	i := s.pick(int(h%uint32(nh)), nh, hashed && s.cfg.HashFallback == "rehash", h)
	if i < 0 {
		return sel, s.errNoDest(alg)
	}
	if hashed {
		sel.Hash = h
	}
	if roundRobin {
		s.rr = (i + 1) % n // the cursor moves past the one actually chosen
	}
	sel.Order = append(sel.Order, i)
	if valg == AlgParallel {
		// Every selectable destination after the first one, the default
		// included, becomes a parallel branch (ds_add_branches).
		sel.Parallel = true
		for j := i + 1; j < n && len(sel.Order) < limit; j++ {
			if !s.State[j].Flags.Skip() {
				sel.Order = append(sel.Order, j)
			}
		}
		return sel, nil
	}
	if s.cfg.Flags&FlagsFailover != 0 {
		sel.Order = s.appendFailover(sel.Order, i, limit, false, nil)
	}
	return sel, nil
}

// hashRange is the number of destinations a hash index ranges over: all of
// them, or all but the last with use_default (unless it is the only one).
func (s *SetState) hashRange() int {
	n := len(s.Dests)
	if s.cfg.UseDefault != 0 && n > 1 {
		return n - 1
	}
	return n
}

// hasDefault reports whether the set keeps a last-resort destination apart.
func (s *SetState) hasDefault() bool { return s.cfg.UseDefault != 0 && len(s.Dests) > 1 }

// nextRR reads and advances the round-robin cursor (Kamailio's idx->last).
func (s *SetState) nextRR() uint32 {
	h := s.rr % len(s.Dests)
	s.rr = (h + 1) % len(s.Dests)
	return uint32(h)
}

// pick returns start when it may be selected, else the fallback among the
// first nh destinations (the next selectable one, or with rehash the
// mix32(h) % k-th of the k selectable ones), else the default destination
// when use_default allows it, else -1.
func (s *SetState) pick(start, nh int, rehash bool, h uint32) int {
	if !s.State[start].Flags.Skip() {
		return start
	}
	if rehash {
		k := 0
		for i := 0; i < nh; i++ {
			if !s.State[i].Flags.Skip() {
				k++
			}
		}
		if k > 0 {
			j := int(mix32(h) % uint32(k))
			for i := 0; i < nh; i++ {
				if !s.State[i].Flags.Skip() {
					if j == 0 {
						return i
					}
					j--
				}
			}
		}
	} else {
		for i := (start + 1) % nh; i != start; i = (i + 1) % nh {
			if !s.State[i].Flags.Skip() {
				return i
			}
		}
	}
	return s.defaultIndex()
}

// defaultIndex is the use_default destination when it may be selected, else -1.
func (s *SetState) defaultIndex() int {
	d := len(s.Dests) - 1
	if s.cfg.UseDefault != 0 && !s.State[d].Flags.Skip() {
		return d
	}
	return -1
}

// appendFailover adds the failover candidates after chosen, in Kamailio's
// order: the selectable destinations after it, wrapping to those before it,
// leaving out the default one (and with loadCap those at maxload), then the
// default one; order stops growing at limit. held is as in SelectHeld.
func (s *SetState) appendFailover(order []int, chosen, limit int, loadCap bool, held []int) []int {
	n := len(s.Dests)
	for off := 1; off < n && len(order) < limit; off++ {
		i := (chosen + off) % n
		if s.State[i].Flags.Skip() || (s.hasDefault() && i == n-1) || (loadCap && !s.underMaxLoad(i, held)) {
			continue
		}
		order = append(order, i)
	}
	return s.appendDefault(order, chosen, limit)
}

// appendDefault ends a failover list with the use_default destination.
func (s *SetState) appendDefault(order []int, chosen, limit int) []int {
	if d := len(s.Dests) - 1; s.hasDefault() && chosen != d && len(order) < limit && !s.State[d].Flags.Skip() {
		order = append(order, d)
	}
	return order
}

// underMaxLoad reports whether destination i can take another call.
func (s *SetState) underMaxLoad(i int, held []int) bool {
	m := s.Dests[i].Attrs.MaxLoad
	return m <= 0 || s.loadOf(i, held) < m
}

// loadOf is destination i's committed load plus the calls held on it.
func (s *SetState) loadOf(i int, held []int) int {
	if i < len(held) {
		return s.State[i].Load + held[i]
	}
	return s.State[i].Load
}

// selectCallLoad is algorithm 10 for an INVITE (ds_get_leastloaded): the
// selectable destination with the fewest calls among those under maxload,
// ties to the lowest index. Unlike Kamailio, whose least-loaded search
// includes the use_default destination and then maps it onto index 0, the
// default one is chosen only when no other can take the call.
func (s *SetState) selectCallLoad(sel Selection, limit int, held []int) (Selection, error) {
	best := -1
	for i := 0; i < s.hashRange(); i++ {
		if s.State[i].Flags.Skip() || !s.underMaxLoad(i, held) {
			continue
		}
		if best < 0 || s.loadOf(i, held) < s.loadOf(best, held) {
			best = i
		}
	}
	if best < 0 && s.hasDefault() && s.underMaxLoad(len(s.Dests)-1, held) {
		best = s.defaultIndex()
	}
	if best < 0 {
		return sel, s.errNoDest(sel.Alg)
	}
	sel.Order = append(sel.Order, best)
	if s.cfg.Flags&FlagsFailover != 0 {
		sel.Order = s.appendFailover(sel.Order, best, limit, true, held)
	}
	return sel, nil
}

// selectLatency is algorithm 13 (ds_manage_route_algo13): starting at the
// round-robin cursor, the selectable destinations are ranked by a
// latency-adjusted priority, highest first, ties keeping the cyclic order,
// so equal destinations round-robin. The adjusted priority of a destination
// with priority p > 0 whose latency L ms exceeds p is max(1, p - L/p), where
// L is the latency estimate (State.Latency.Est), or with the cc attribute
// the congestion, estimate minus average; other destinations keep p. The
// first ranked is chosen and the cursor moves past it; with Flags&2 the rest
// of the ranking is the failover list, then the default one. Unlike
// Kamailio, the default destination is a last resort here too, and with
// use_default the walk does not visit an entry twice.
func (s *SetState) selectLatency(sel Selection, limit int) (Selection, error) {
	n, nh := len(s.Dests), s.hashRange()
	start := s.rr % nh
	order := sel.Order
	for off := 0; off < nh; off++ {
		z := (start + off) % nh
		if s.State[z].Flags.Skip() {
			continue
		}
		rp := s.latencyPriority(z)
		p := len(order)
		for p > 0 && s.latencyPriority(order[p-1]) < rp {
			p--
		}
		order = append(order, 0)
		copy(order[p+1:], order[p:])
		order[p] = z
	}
	if len(order) == 0 {
		d, err := s.lastResort(sel.Alg)
		if err != nil {
			return sel, err
		}
		order = append(order, d)
	}
	chosen := order[0]
	s.rr = (chosen + 1) % n
	if s.cfg.Flags&FlagsFailover == 0 {
		limit = 1
	}
	sel.Order = s.appendDefault(order[:min(len(order), limit)], chosen, limit)
	return sel, nil
}

// latencyPriority is algorithm 13's adjusted priority of destination i.
func (s *SetState) latencyPriority(i int) int {
	p := s.Dests[i].Priority
	lat := s.State[i].Latency
	l := int(lat.Est)
	if s.Dests[i].Attrs.CC != 0 {
		l = int(lat.Est - lat.Avg)
	}
	if p > 0 && l > p {
		return max(1, p-l/p)
	}
	return p
}

// selectRendezvous is algorithm 16, new in sipdispatch: weighted rendezvous
// (highest random weight) hashing of the trimmed Call-ID. Each selectable
// destination scores -w/ln(u), u uniform in (0,1) from a 64-bit mix of the
// Call-ID hash and the destination's seed (its Key), w its weight attribute;
// the highest score wins. A destination's share is its weight over the sum of
// the live weights; when it dies only its own calls move, spread over the
// rest in proportion to their weights, and they come back when it returns.
// With no weight in the set all weigh 1; when some have weights, those
// without one are chosen only if no weighted destination is live. With
// Flags&2 the failover list follows the scores. Selection.Hash is the 64-bit
// Call-ID hash folded to 32 bits.
func (s *SetState) selectRendezvous(sel Selection, req *Request, limit int) (Selection, error) {
	ch := fnv64(CallIDKey(req.CallID))
	sel.Hash = uint32(ch) ^ uint32(ch>>32)
	nh := s.hashRange()
	if s.cfg.Flags&FlagsFailover == 0 {
		best, bestScore := -1, 0.0
		for i := 0; i < nh; i++ {
			if s.State[i].Flags.Skip() {
				continue
			}
			if sc := s.rendezvousScore(i, ch); best < 0 || sc > bestScore {
				best, bestScore = i, sc
			}
		}
		if best < 0 && s.hasDefault() {
			best = s.defaultIndex()
		}
		if best < 0 {
			return sel, s.errNoDest(sel.Alg)
		}
		sel.Order = append(sel.Order, best)
		return sel, nil
	}

	if len(s.scores) < nh {
		s.scores = make([]float64, len(s.Dests))
	}
	order := sel.Order
	for i := 0; i < nh; i++ {
		if s.State[i].Flags.Skip() {
			continue
		}
		sc := s.rendezvousScore(i, ch)
		s.scores[i] = sc
		p := len(order)
		for p > 0 && s.scores[order[p-1]] < sc {
			p--
		}
		order = append(order, 0)
		copy(order[p+1:], order[p:])
		order[p] = i
	}
	if len(order) == 0 {
		d, err := s.lastResort(sel.Alg)
		if err != nil {
			return sel, err
		}
		order = append(order, d)
	}
	sel.Order = s.appendDefault(order[:min(len(order), limit)], order[0], limit)
	return sel, nil
}

// rendezvousScore is destination i's algorithm 16 score for Call-ID hash ch.
// Unweighted destinations in a weighted set score below every weighted one.
func (s *SetState) rendezvousScore(i int, ch uint64) float64 {
	x := mix64(ch ^ s.seeds[i])
	u := (float64(x>>11) + 0.5) / (1 << 53) // uniform in (0,1), never 0 or 1
	w := s.Dests[i].Attrs.Weight
	switch {
	case !s.anyWeight:
		w = 1
	case w <= 0:
		return math.Log(u) // negative: below any weighted destination
	}
	return -float64(w) / math.Log(u)
}

// errNoDest wraps ErrNoDestination with the set and algorithm.
func (s *SetState) errNoDest(alg Algorithm) error {
	return fmt.Errorf("set %d: %s: %w", s.ID, alg, ErrNoDestination)
}

// lastResort is the use_default destination when no ranked one is live, or
// the set's no-destination error.
func (s *SetState) lastResort(alg Algorithm) (int, error) {
	if s.hasDefault() {
		if d := s.defaultIndex(); d >= 0 {
			return d, nil
		}
	}
	return -1, s.errNoDest(alg)
}
