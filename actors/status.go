package actors

import "github.com/sipdispatch/sipdispatch/dispatch"

// SetStatus is a copy of one set's destinations and runtime state, for the
// management API and tests.
type SetStatus struct {
	ID    int
	Dests []DestStatus
	// Calls is the number of call-load entries of the set.
	Calls int
}

// DestStatus is one destination with its runtime state.
type DestStatus struct {
	dispatch.Destination
	State dispatch.DestState
}
