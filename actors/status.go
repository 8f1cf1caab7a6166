package actors

import "github.com/sipdispatch/sipdispatch/dispatch"

// SetStatus is a copy of one set's destinations and runtime state, for the
// management API and tests.
type SetStatus struct {
	ID    int
	Dests []DestStatus
	// Calls is the number of call-load entries of the set.
	Calls int
	// Reserved counts this node's algorithm-10 picks whose entries have not
	// committed yet; Ended the tombstones of ended calls (see
	// dispatch.LateAddWindow).
	Reserved, Ended int
	// Entries are the call-load entries, sorted by Call-ID, when asked for.
	Entries []dispatch.LoadEntry
}

// DestStatus is one destination with its runtime state.
type DestStatus struct {
	dispatch.Destination
	State dispatch.DestState
}
