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
	// LoadAdded is true when the actor recorded the request's Call-ID in the
	// call-load table (algorithm 10 INVITE); the proxy must then confirm or
	// remove it as the call proceeds.
	LoadAdded bool
	// LoadCommand, in replicated mode (Options.Proposer), is the call-load
	// entry of an algorithm-10 INVITE that the caller must propose
	// (Registry.CommitLoad, or CommitLoadAsync); nil when there is none to add. Until it is
	// applied, or its reservation times out, the set counts the call on the
	// chosen destination for its own least-loaded picks.
	LoadCommand *dispatch.Command
}

// ProbeTarget is one destination due for a keepalive.
type ProbeTarget struct {
	SetID int
	Dest  dispatch.Destination
}
