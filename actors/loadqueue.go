package actors

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// The load queue's pace: how many proposals run at once, how long one
// attempt may wait for a leader, and the retry backoff. Each worker waits
// for its command's whole commit, group-commit linger included (~8 ms on a
// standalone node under load), so the workers bound the queue's rate:
// 128 carry ~14,000 commands/s there, above the two per call a node
// sustains (docs/benchmarks.md, BenchmarkLoadConfirmRemove).
const (
	loadWorkers      = 128
	loadAttemptLimit = 2 * time.Second
	loadRetryMin     = 50 * time.Millisecond
	loadRetryMax     = 2 * time.Second
	loadSweepEvery   = 200 * time.Millisecond
	loadReadySize    = 4096
)

// loadKey names one pending load command: a call's confirm, move or removal.
type loadKey struct {
	callID string
	kind   dispatch.CommandKind
}

// pendingLoad is a load command that has not committed yet.
type pendingLoad struct {
	c        dispatch.Command
	until    time.Time // give up: the entry would have expired by then anyway
	due      time.Time // next attempt
	attempts int
	queued   bool // on the ready channel or being proposed
	adopted  bool // handed over by another node
}

// LoadQueueStats counts what the load queue did since the registry started.
type LoadQueueStats struct {
	Pending  int    // load commands not committed yet
	Retries  uint64 // attempts after a failed one
	GivenUp  uint64 // dropped after their entry would have expired anyway
	Adopted  uint64 // handed over by other nodes (AdoptLoad)
	Rejected uint64 // refused by the state (e.g. a move to a destination a reload removed)
}

// loadQueue keeps a node's confirms, moves and removals until each has
// committed: a BYE handled during an election, on a node cut off from the
// leader, or just before a crash must still end its call's entry on every
// node. Commands are idempotent by Call-ID, so retrying one that may have
// committed is safe. With a store the queue survives a process crash.
type loadQueue struct {
	prop  Proposer
	now   func() time.Time
	store *pendingStore // nil: memory only

	mu    sync.Mutex
	items map[loadKey]*pendingLoad // guarded by mu

	ready chan loadKey

	retries, givenUp, adopted, rejected atomic.Uint64
}

func newLoadQueue(prop Proposer, now func() time.Time, store *pendingStore) *loadQueue {
	return &loadQueue{prop: prop, now: now, store: store, items: make(map[loadKey]*pendingLoad), ready: make(chan loadKey, loadReadySize)}
}

// add queues c until it commits or until; a command already pending for the
// same call and kind is kept (a retransmitted BYE adds nothing), and add
// returns false. A removal makes a pending confirm or move of the call
// pointless, so it drops them.
func (q *loadQueue) add(c dispatch.Command, until time.Time, adopted bool) bool {
	k := loadKey{c.CallID, c.Kind}
	q.mu.Lock()
	defer q.mu.Unlock()
	if _, ok := q.items[k]; ok {
		return false
	}
	if c.Kind == dispatch.CmdLoadRemove {
		for _, other := range [...]dispatch.CommandKind{dispatch.CmdLoadConfirm, dispatch.CmdLoadMove} {
			q.dropLocked(loadKey{c.CallID, other})
		}
	}
	p := &pendingLoad{c: c, until: until, due: q.now(), adopted: adopted}
	q.items[k] = p
	if q.store != nil {
		q.store.put(c, until)
	}
	q.pushLocked(k, p)
	return true
}

// pushLocked hands p to a worker unless the ready channel is full; the
// sweeper hands it over later then.
func (q *loadQueue) pushLocked(k loadKey, p *pendingLoad) {
	select {
	case q.ready <- k:
		p.queued = true
	default:
	}
}

func (q *loadQueue) dropLocked(k loadKey) {
	p, ok := q.items[k]
	if !ok {
		return
	}
	delete(q.items, k)
	if q.store != nil {
		q.store.done(p.c)
	}
}

// applied drops the pending command that c, just applied from the log,
// fulfils: the same kind for the same call, proposed no later (this node's
// own, or another node's copy of a handed-over one).
func (q *loadQueue) applied(c *dispatch.Command) {
	k := loadKey{c.CallID, c.Kind}
	q.mu.Lock()
	defer q.mu.Unlock()
	if p, ok := q.items[k]; ok && p.c.At <= c.At && !p.queued {
		q.dropLocked(k)
	}
}

// run proposes pending commands until ctx ends: loadWorkers at a time, and
// a sweeper that retries failed ones after their backoff.
func (q *loadQueue) run(ctx context.Context, wg *sync.WaitGroup) {
	for range loadWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case k := <-q.ready:
					q.attempt(ctx, k)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(loadSweepEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				q.sweep()
			}
		}
	}()
}

// attempt proposes one pending command once.
func (q *loadQueue) attempt(ctx context.Context, k loadKey) {
	q.mu.Lock()
	p, ok := q.items[k]
	q.mu.Unlock()
	if !ok {
		return
	}
	actx, cancel := context.WithTimeout(ctx, loadAttemptLimit)
	err := q.prop.Propose(actx, p.c)
	cancel()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.items[k] != p {
		return // dropped meanwhile (a removal replaced a confirm)
	}
	p.queued = false
	switch {
	case err == nil:
		q.dropLocked(k)
	case permanent(err):
		// The state refuses it the same way on every node: a move to a
		// destination or set that a reload removed. Retrying cannot help.
		q.rejected.Add(1)
		q.dropLocked(k)
	default:
		p.attempts++
		q.retries.Add(1)
		p.due = q.now().Add(backoff(p.attempts))
	}
}

// permanent reports whether a proposal's error came from applying the
// command (deterministic, the same on every node) rather than from getting
// it committed.
func permanent(err error) bool {
	return errors.Is(err, dispatch.ErrUnknownSet) || errors.Is(err, dispatch.ErrUnknownDestination) ||
		errors.Is(err, dispatch.ErrBadCommand) || errors.Is(err, dispatch.ErrMalformed)
}

func backoff(attempts int) time.Duration {
	d := loadRetryMin << min(attempts-1, 8)
	return min(d, loadRetryMax)
}

// sweep hands due commands back to the workers and gives up on those whose
// entry would have expired anyway.
func (q *loadQueue) sweep() {
	now := q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	for k, p := range q.items {
		switch {
		case p.queued:
		case now.After(p.until):
			q.givenUp.Add(1)
			q.dropLocked(k)
		case !now.Before(p.due):
			q.pushLocked(k, p)
			if !p.queued {
				return // the workers are busy; the next sweep goes on
			}
		}
	}
	if q.store != nil {
		q.store.compact(q.liveLocked())
	}
}

// liveLocked lists the pending commands with their deadlines.
func (q *loadQueue) liveLocked() []storedLoad {
	out := make([]storedLoad, 0, len(q.items))
	for _, p := range q.items {
		out = append(out, storedLoad{c: p.c, until: p.until})
	}
	return out
}

// pending lists the commands not committed yet that have waited at least
// older, oldest first is not promised: for the hand-over to other nodes.
func (q *loadQueue) pending(older time.Duration) []dispatch.Command {
	cut := q.now().Add(-older)
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []dispatch.Command
	for _, p := range q.items {
		if !p.adopted && p.attempts > 0 && time.Unix(0, p.c.At).Before(cut) {
			out = append(out, p.c)
		}
	}
	return out
}

func (q *loadQueue) stats() LoadQueueStats {
	q.mu.Lock()
	n := len(q.items)
	q.mu.Unlock()
	return LoadQueueStats{Pending: n, Retries: q.retries.Load(), GivenUp: q.givenUp.Load(), Adopted: q.adopted.Load(), Rejected: q.rejected.Load()}
}

// empty reports whether nothing is pending.
func (q *loadQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items) == 0
}
