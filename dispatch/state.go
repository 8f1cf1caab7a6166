package dispatch

import (
	"fmt"
	"math/rand/v2"
)

// DestState is the runtime state of one destination. It lives in a SetState
// and changes only through SetState's methods.
type DestState struct {
	Flags     Flags        // current flags (starts as the source's flags)
	Failures  int          // failures counted toward ProbingThreshold (Kamailio's message_count)
	Successes int          // successful probes counted toward InactiveThreshold
	Load      int          // calls in progress (algorithm 10); never negative
	Latency   LatencyStats // keepalive round-trip statistics
}

// LatencyStats are a destination's keepalive round-trip statistics in
// milliseconds, as Kamailio's ds_latency_stats (LATENCY in dispatcher.list).
type LatencyStats struct {
	Count    int64   // replies measured
	Timeouts int64   // keepalives that got no reply
	Avg      float64 // running mean
	M2       float64 // sum of squared deviations (Welford), for Std
	Std      float64 // standard deviation
	Est      float64 // exponentially weighted estimate (ds_latency_estimator_alpha)
	Max      float64 // largest measured
	Min      float64 // smallest measured
}

// Selection is the ordered result of Select: the chosen destination first,
// then its failover candidates (Config.Flags&2), capped by the limit.
type Selection struct {
	SetID    int
	Alg      Algorithm
	Hash     uint32 // the request's hash for hash algorithms, else 0
	Order    []int  // indexes into the set's Dests
	Parallel bool   // algorithm 12: Order are parallel branches, not failover steps
}

// SetState is one destination set and its runtime state: per-destination flags
// and counters, round-robin and weight cursors, and the call-load table. It is
// not safe for concurrent use; one owner (a set actor) drives it.
type SetState struct {
	ID    int
	Dests []Destination // in selection order, read-only after construction
	State []DestState   // parallel to Dests

	cfg  *Config
	tmpl *Template // compiled cfg.HashPVar, nil when empty
	rng  *rand.Rand

	rr       int   // round-robin cursor (Kamailio idx->last)
	wlist    []int // algorithm 9: 100 slots of destination indexes
	wlast    int
	rwlist   []int // algorithm 11: 100 slots over the active destinations
	rwlast   int
	rweights []int // algorithm 11: scratch for relativeWeights
	pwlist   []int // algorithm 15: 100 slots over the best live priority group
	pwlast   int

	rrSerial  bool      // algorithm 14 round-robins (all priorities equal and > 0)
	seeds     []uint64  // algorithm 16: per-destination rendezvous seeds
	anyWeight bool      // algorithm 16: some destination has a weight
	scores    []float64 // algorithm 16: scratch for ordering the failover list

	load  LoadTable
	codes ReplyCodes // parsed cfg.PingReplyCodes, for Probe

	scratch []byte // reused buffer for template expansion; owned by the set's single user
}

// NewSetState builds the runtime state of set under cfg. rng supplies every
// random choice (algorithm 6, weight table shuffles) so that tests can fix it.
// cfg must have passed Validate and must not change afterwards.
func NewSetState(set Set, cfg *Config, rng *rand.Rand) (*SetState, error) {
	s := &SetState{
		ID:    set.ID,
		Dests: set.Dests,
		State: make([]DestState, len(set.Dests)),
		cfg:   cfg,
		rng:   rng,
		load:  newLoadTable(cfg.HashSize),
	}
	if cfg.HashPVar != "" {
		t, err := ParseTemplateVars(cfg.HashPVar, cfg.HashPVarVars)
		if err != nil {
			return nil, err
		}
		s.tmpl = t
	}
	codes, err := ParseReplyCodes(cfg.PingReplyCodes)
	if err != nil {
		return nil, fmt.Errorf("ds_ping_reply_codes: %w", err)
	}
	s.codes = codes
	for i := range set.Dests {
		s.State[i].Flags = set.Dests[i].Flags
		s.State[i].Latency = initialLatency(set.Dests[i].Attrs)
	}
	s.initWeights()
	s.stateChanged()
	return s, nil
}

// Config returns the configuration the set runs under.
func (s *SetState) Config() *Config { return s.cfg }

// stateChanged recomputes what depends on which destinations are active; every
// method that changes a destination's flags calls it.
func (s *SetState) stateChanged() {
	s.initRelativeWeights()
	s.initPriorityWeights()
}

// Find returns the index of the destination with this URI, or -1.
func (s *SetState) Find(uri string) int {
	for i := range s.Dests {
		if s.Dests[i].URI == uri {
			return i
		}
	}
	return -1
}

// FindDUID returns the index of the destination with this duid, or -1.
func (s *SetState) FindDUID(duid string) int {
	for i := range s.Dests {
		if s.Dests[i].Attrs.DUID == duid {
			return i
		}
	}
	return -1
}
