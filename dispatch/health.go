package dispatch

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ErrUnknownState means a state string has a letter outside a, i, t, d, p (or
// the digits 0-3). The RPC answers it with Kamailio's "Unknown State Value".
var ErrUnknownState = errors.New("unknown state value")

// markable are the bits a mark resets before it applies its state. Kamailio
// resets DS_STATES_ALL (63), which also drops the no-DNS and never-ping bits
// of the source; sipdispatch keeps those two, as they are configuration.
const markable = FlagInactive | FlagTrying | FlagDisabled | FlagProbing

// MarkOp is a parsed ds_mark_dst / set_state state.
type MarkOp struct {
	// Set are the state bits to set (FlagInactive, FlagTrying, FlagDisabled,
	// FlagProbing); none means active.
	Set Flags
	// Clear are the bits reset before Set applies; ParseMarkState resets
	// every state bit, as Kamailio does.
	Clear Flags
	// Direct sets the state as given, as Kamailio's dispatcher.set_state RPC
	// (ds_reinit_state) does: no thresholds, counters reset, and it is the
	// only kind of mark that changes a disabled destination. Without it the
	// mark follows ds_update_state: trying counts toward
	// ds_probing_threshold, inactive→active toward ds_inactive_threshold.
	Direct bool
}

// ParseMarkState parses a state as ds_mark_dst and the set_state RPC take it:
// letters a/A (active: drop what came before), i/I (inactive), t/T (trying),
// d/D (disabled) and p/P (probing), combined as in "ip"; or a leading digit
// as Kamailio's RPC reads it: 0 inactive, 1 active, 2 disabled, 3 trying,
// optionally followed by p/P. Anything else is ErrUnknownState.
func ParseMarkState(s string) (MarkOp, error) {
	op := MarkOp{Clear: markable}
	if s == "" {
		return MarkOp{}, fmt.Errorf("%w: empty", ErrUnknownState)
	}
	rest := s
	switch s[0] {
	case '0':
		op.Set, rest = FlagInactive, s[1:]
	case '1':
		rest = s[1:]
	case '2':
		op.Set, rest = FlagDisabled, s[1:]
	case '3':
		op.Set, rest = FlagTrying, s[1:]
	}
	for i := 0; i < len(rest); i++ {
		switch rest[i] {
		case 'a', 'A':
			op.Set = 0
		case 'i', 'I':
			op.Set |= FlagInactive
		case 't', 'T':
			op.Set |= FlagTrying
		case 'd', 'D':
			op.Set |= FlagDisabled
		case 'p', 'P':
			op.Set |= FlagProbing
		default:
			return MarkOp{}, fmt.Errorf("%w: %q", ErrUnknownState, s)
		}
	}
	return op, nil
}

// Event is a state change between selectable and not (dst-up / dst-down).
type Event struct {
	SetID    int
	URI      string
	DUID     string
	Up       bool      // true: now selectable (dst-up); false: dst-down
	Old, New Flags     // flags before and after
	At       time.Time // when the change was applied
}

// Mark applies op to destination i (ds_mark_dst, set_state). It returns an
// event when the destination moved between selectable and not.
func (s *SetState) Mark(i int, op MarkOp, now time.Time) (Event, bool) {
	st := &s.State[i]
	old := st.Flags
	if op.Direct {
		f := old &^ op.Clear
		if op.Set&FlagDisabled != 0 {
			f |= FlagDisabled // disabled overrides every other state bit
		} else {
			f |= op.Set
		}
		st.Failures, st.Successes = 0, 0
		return s.setFlags(i, old, f, now)
	}
	if old&FlagDisabled != 0 {
		// Only an administrator's direct mark ends "disabled"; a failover
		// mark racing with it must not bring the destination back.
		return Event{}, false
	}
	return s.update(i, op.Set, op.Clear, now)
}

// update is Kamailio's ds_update_state with thresholds (mode 0).
func (s *SetState) update(i int, set, clear Flags, now time.Time) (Event, bool) {
	st := &s.State[i]
	old := st.Flags
	f := old &^ clear
	asked := set
	if set&FlagTrying != 0 && old&FlagInactive != 0 {
		// An inactive destination must become active before it can try.
		set = set&^FlagTrying | FlagInactive
	}
	if set&FlagDisabled != 0 {
		f |= FlagDisabled
	} else {
		f |= set
	}
	switch {
	case set&FlagTrying != 0:
		st.Successes = 0
		st.Failures++
		if st.Failures >= s.cfg.ProbingThreshold {
			f = f&^FlagTrying | FlagInactive
			st.Failures = 0
		}
	case asked&FlagTrying == 0 && old&FlagInactive != 0:
		st.Failures = 0
		st.Successes++
		if st.Successes < s.cfg.InactiveThreshold {
			// Not enough successes yet: stay inactive (and probing).
			f |= FlagInactive | old&FlagProbing
		} else {
			st.Successes = 0
		}
	default:
		st.Failures, st.Successes = 0, 0
	}
	return s.setFlags(i, old, f, now)
}

// setFlags stores the new flags, refreshes what depends on them and builds the
// event when selectability changed.
func (s *SetState) setFlags(i int, old, f Flags, now time.Time) (Event, bool) {
	if f == old {
		return Event{}, false
	}
	s.State[i].Flags = f
	s.stateChanged()
	if old.Skip() == f.Skip() {
		return Event{}, false
	}
	d := &s.Dests[i]
	return Event{SetID: s.ID, URI: d.URI, DUID: d.Attrs.DUID, Up: !f.Skip(), Old: old, New: f, At: now}, true
}

// ReplyCodes are the keepalive replies counted as success besides 2xx
// (ds_ping_reply_codes).
type ReplyCodes struct {
	codes   []int // exact codes, 100..699
	classes []int // classes, 1..6
}

// ParseReplyCodes parses ds_ping_reply_codes, e.g. "class=2;code=403;code=488".
// Kamailio skips unknown names and out-of-range values; here they are errors.
func ParseReplyCodes(s string) (ReplyCodes, error) {
	var rc ReplyCodes
	pairs, err := parseParams(strings.TrimSuffix(s, ";"))
	if err != nil {
		return ReplyCodes{}, err
	}
	for _, p := range pairs {
		n, err := strconv.Atoi(p.Value)
		switch name := strings.ToLower(p.Name); {
		case name == "code" && err == nil && n >= 100 && n < 700:
			rc.codes = append(rc.codes, n)
		case name == "class" && err == nil && n >= 1 && n < 7:
			rc.classes = append(rc.classes, n)
		case name == "code":
			return ReplyCodes{}, fmt.Errorf("code %q: must be 100..699", p.Value)
		case name == "class":
			return ReplyCodes{}, fmt.Errorf("class %q: must be 1..6", p.Value)
		default:
			return ReplyCodes{}, fmt.Errorf("unknown name %q: want code= or class=", p.Name)
		}
	}
	return rc, nil
}

// Match reports whether a keepalive reply with this code counts as success:
// any 2xx (as Kamailio's ds_options_callback), or a listed code or class.
func (rc ReplyCodes) Match(code int) bool {
	if code >= 200 && code <= 299 {
		return true
	}
	for _, c := range rc.codes {
		if c == code {
			return true
		}
	}
	for _, c := range rc.classes {
		if c == code/100 {
			return true
		}
	}
	return false
}

// ProbeResult is the outcome of one keepalive to a destination.
type ProbeResult struct {
	Code    int           // final reply code; 0 when Timeout
	RTT     time.Duration // round trip of the reply
	Timeout bool          // no reply (or a transport error)
}

// Probe applies a keepalive result to destination i as Kamailio's
// ds_options_callback does:
//
//   - with ds_ping_latency_stats, a destination in probing state gets its
//     latency statistics updated (a timeout, or a 408, counts as a timeout);
//   - ds_probing_mode 3 ignores results for a destination whose probing flag
//     was cleared meanwhile; a disabled destination is never changed;
//   - success (2xx or ds_ping_reply_codes) marks it active, counting toward
//     ds_inactive_threshold when it was inactive; the probing flag stays in
//     mode 1 and 3 and is dropped in mode 0 and 2;
//   - failure marks it trying, inactive at ds_probing_threshold failures; the
//     probing flag is set unless mode is 0 (Kamailio drops it there, so a
//     mode-0 destination is pinged again only once marked "p" anew).
func (s *SetState) Probe(i int, res ProbeResult, now time.Time) (Event, bool) {
	st := &s.State[i]
	if s.cfg.PingLatencyStats == 1 && st.Flags&FlagProbing != 0 {
		s.updateLatency(&st.Latency, res)
		if s.allCC() {
			// Kamailio rebuilds the relative weights after a keepalive
			// only when every destination of the set has cc=1; otherwise
			// the congestion weights wait for the next state change.
			s.initRelativeWeights()
		}
	}
	mode := s.cfg.ProbingMode
	if (mode == 3 && st.Flags&FlagProbing == 0) || st.Flags&FlagDisabled != 0 {
		return Event{}, false
	}
	var set Flags
	if !res.Timeout && s.codes.Match(res.Code) {
		if mode == 1 || mode == 3 {
			set = FlagProbing
		}
	} else {
		set = FlagTrying
		if mode != 0 {
			set |= FlagProbing
		}
	}
	return s.update(i, set, markable, now)
}

// allCC reports whether every destination of the set has cc=1.
func (s *SetState) allCC() bool {
	for i := range s.Dests {
		if s.Dests[i].Attrs.CC == 0 {
			return false
		}
	}
	return len(s.Dests) > 0
}

// ShouldProbe reports whether destination i gets a keepalive on this round
// (Kamailio's ds_ping_set): never when ds_ping_interval is 0 or the
// destination is disabled or flagged never-ping or no-DNS; in mode 1 always;
// in modes 0 and 3 when it has the probing flag; in mode 2 when it is both
// inactive and probing.
func (s *SetState) ShouldProbe(i int) bool {
	f := s.State[i].Flags
	if s.cfg.PingInterval == 0 || f&(FlagDisabled|FlagNoPing|FlagNoDNS) != 0 {
		return false
	}
	switch s.cfg.ProbingMode {
	case 1:
		return true
	case 2:
		return f&FlagProbing != 0 && f&FlagInactive != 0
	default:
		return f&FlagProbing != 0
	}
}

// Kamailio's latency statistics constants (latency_stats_update).
const (
	latencyTrained  = 10000   // count that marks the estimator as trained
	latencyCountCap = 2097152 // beyond this the mean becomes a weighted mean
)

// initialLatency returns the statistics a latency=N attribute seeds, as
// Kamailio's ds_set_attrs: the hint as mean, estimate, min and max, and a
// count that marks the estimator as trained.
func initialLatency(a Attrs) LatencyStats {
	if _, ok := a.Get("latency"); !ok {
		return LatencyStats{}
	}
	l := float64(a.Latency)
	return LatencyStats{Count: latencyTrained, Avg: l, Est: l, Max: l, Min: l}
}

// updateLatency folds one keepalive into the statistics as Kamailio's
// ds_update_latency / latency_stats_update: Welford mean and deviation, an
// EWMA estimate once ten samples are in, training shortcut when stable.
func (s *SetState) updateLatency(ls *LatencyStats, res ProbeResult) {
	if res.Timeout || res.Code == 408 {
		ls.Timeouts++
		return
	}
	ms := float64(res.RTT.Milliseconds())
	if ls.Count < latencyCountCap {
		ls.Count++
	} else {
		ls.M2 -= ls.M2 / float64(ls.Count)
	}
	if ls.Count == 1 {
		*ls = LatencyStats{Count: 1, Timeouts: ls.Timeouts, Avg: ms, Est: ms, Max: ms, Min: ms}
	}
	if ls.Count > 10 && ls.Count < latencyTrained && ls.Std < 0.5 {
		ls.Count = latencyTrained
	}
	ls.Min = min(ls.Min, ms)
	ls.Max = max(ls.Max, ms)
	if ls.Count > 1 {
		delta := ms - ls.Avg
		ls.Avg += delta / float64(ls.Count)
		ls.M2 += delta * (ms - ls.Avg)
		ls.Std = math.Sqrt(ls.M2 / float64(ls.Count-1))
	}
	if ls.Count < 10 {
		ls.Est = ls.Avg
	} else {
		// alpha weighs the new sample (Kamailio 6.1; 5.x and 6.0 had it the
		// other way round).
		alpha := float64(s.cfg.LatencyEstimatorAlpha) / 1000
		ls.Est = ms*alpha + ls.Est*(1-alpha)
	}
}
