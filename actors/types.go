package actors

import "github.com/sipdispatch/sipdispatch/dispatch"

// Selection is what a set actor hands back for one request: copies of the
// chosen destination and its failover candidates, safe to use after the actor
// has moved on.
type Selection struct {
	SetID    int
	Alg      dispatch.Algorithm
	Hash     uint32
	Dests    []dispatch.Destination // chosen first, then failover candidates
	Parallel bool                   // algorithm 12: Dests are parallel branches
	// LoadAdded is true when Select recorded the request's Call-ID in the
	// call-load table (algorithm 10 INVITE; committed, or with
	// load_replication async being committed); the proxy must then confirm
	// or remove it as the call proceeds.
	LoadAdded bool
}

// ProbeTarget is one destination due for a keepalive.
type ProbeTarget struct {
	SetID int
	Dest  dispatch.Destination
}
