package cluster

import "errors"

// Sentinel errors. Callers test them with errors.Is; returned errors wrap
// them with context.
var (
	// ErrNoLeader: no leader was known for the whole time Propose was
	// allowed to retry (no quorum, election in progress, not joined yet).
	ErrNoLeader = errors.New("cluster: no leader")
	// ErrTimeout: the deadline (the context's or Config.ApplyTimeout) passed
	// before the command was committed and applied locally. The command may
	// still commit later.
	ErrTimeout = errors.New("cluster: timed out")
	// ErrClosed: the node is closed or closing.
	ErrClosed = errors.New("cluster: node closed")
	// ErrNotStarted: the node was created but Start has not run.
	ErrNotStarted = errors.New("cluster: node not started")
	// ErrLeadershipLost: the command reached a leader that lost leadership
	// (or the connection to it broke) before reporting the outcome. The
	// command may or may not commit; it is not retried because retrying
	// could apply it twice.
	ErrLeadershipLost = errors.New("cluster: leadership lost, outcome unknown")
	// ErrNoResult: the command committed, but this node caught up by
	// installing a snapshot that already contains it, so its Applier never
	// applied the command itself and there is no result to return.
	ErrNoResult = errors.New("cluster: committed, result unavailable (caught up by snapshot)")
	// ErrStandalone: the operation needs other members (Join, Leave), and
	// the node runs standalone (Config.Standalone).
	ErrStandalone = errors.New("cluster: standalone node has no cluster")
	// ErrTooLarge: a command or broadcast exceeds its size limit.
	ErrTooLarge = errors.New("cluster: payload too large")
)

// errNotLeader is the retryable "that node is not the leader" outcome of one
// attempt; the command was not appended anywhere.
var errNotLeader = errors.New("cluster: not the leader")
