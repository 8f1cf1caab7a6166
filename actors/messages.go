package actors

import "github.com/sipdispatch/sipdispatch/dispatch"

// Messages on the data lane. Each carries what the actor needs and, when the
// sender waits, a reply channel of capacity 1 so the actor never blocks on it.

type selectMsg struct {
	req   *dispatch.Request
	alg   dispatch.Algorithm
	limit int
	reply chan selectResult
}

type selectResult struct {
	sel Selection
	add *dispatch.Command // algorithm 10: the pick's LoadAdd, or a LoadMove when the call has an entry
	err error
}

// markMsg names the destination of a mark: uri (or duid when byDUID); uri
// "all" marks every destination of the set. It is proposed, never sent.
type markMsg struct {
	uri    string
	byDUID bool
	op     dispatch.MarkOp
}

type probeTargetsMsg struct {
	reply chan []ProbeTarget
}

type statusMsg struct {
	entries bool // include the call-load entries
	reply   chan SetStatus
}

// unreserveMsg drops the call-load reservation of a Call-ID whose LoadAdd
// could not be committed.
type unreserveMsg struct{ callID string }

// Messages on the control lane, served before any data message.

// replaceMsg hands the actor a new SetState for its set id (a reload). The
// actor carries its runtime state over into it and adopts it.
// With restore the actor adopts next as it is (a snapshot restore) instead.
type replaceMsg struct {
	next    *dispatch.SetState
	restore bool
	reply   chan struct{}
}

// applyMsg delivers one committed command (replicated mode).
type applyMsg struct {
	c     dispatch.Command
	reply chan applyResult
}

type applyResult struct {
	res dispatch.ApplyResult
	err error
}

// snapshotMsg asks for the set's encoded replicated state.
type snapshotMsg struct {
	reply chan snapshotResult
}

type snapshotResult struct {
	b   []byte
	err error
}
