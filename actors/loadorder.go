package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Load-replication modes (Options.LoadReplication), also the mode label of
// Options.OnLoadCommitFailure.
const (
	// LoadCommitSync: an algorithm-10 INVITE's Select returns only once its
	// load entry has committed; without a quorum it fails (the proxy
	// answers 503).
	LoadCommitSync = "sync"
	// LoadCommitAsync: Select returns at once on the reserved pick and the
	// entry commits in the background, or is lost with the quorum.
	LoadCommitAsync = "async"
)

// Errors of an algorithm-10 Select; test them with errors.Is.
var (
	// ErrLoadNotCommitted means the INVITE's load entry could not commit in
	// time (load_replication sync): the call must not go ahead.
	ErrLoadNotCommitted = errors.New("call-load entry not committed")
	// ErrLoadInFlight means the Call-ID's load entry is being committed for
	// an earlier copy of the INVITE: this one is a retransmission that the
	// first copy's outcome answers.
	ErrLoadInFlight = errors.New("call-load entry of this call is being committed")
)

// loadWarnEvery rate-limits the warning about failed LoadAdds: without a
// quorum every alg-10 INVITE fails one, at the call rate.
const loadWarnEvery = 10 * time.Second

// flight is a LoadAdd this node is proposing. Confirms and moves issued for
// its Call-ID meanwhile wait in after, so that this node never proposes
// them before the add (they would find no entry). applied is set when the
// add reaches Apply, so a proposal that fails after its command applied
// still counts as committed.
type flight struct {
	after   []dispatch.Command
	applied bool
}

// loadOrder orders one node's load commands per Call-ID behind the call's
// LoadAdd. It is local, not replicated state: it only decides when this node
// queues them; what they do is decided by the log order alone.
type loadOrder struct {
	mu      sync.Mutex
	flights map[string]*flight

	warnMu     sync.Mutex
	lastWarn   time.Time
	suppressed int
}

// start registers the LoadAdd of callID as in flight; false when one
// already is (a second pick for the Call-ID in another set), whose commands
// then order behind the first.
func (o *loadOrder) start(callID string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.flights[callID]; ok {
		return false
	}
	if o.flights == nil {
		o.flights = make(map[string]*flight)
	}
	o.flights[callID] = &flight{}
	return true
}

// hold holds c back while its Call-ID's LoadAdd is in flight; false: c may
// be queued now.
func (o *loadOrder) hold(c dispatch.Command) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f, ok := o.flights[c.CallID]; ok {
		f.after = append(f.after, c)
		return true
	}
	return false
}

// finish ends the flight of callID and returns the commands held back and
// whether the add committed (its proposal succeeded, or it applied here).
func (o *loadOrder) finish(callID string, proposeErr error) (after []dispatch.Command, committed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.flights[callID]
	delete(o.flights, callID)
	if f == nil {
		return nil, proposeErr == nil
	}
	return f.after, proposeErr == nil || f.applied
}

// applied notes that a LoadAdd for callID was applied on this node.
func (o *loadOrder) applied(callID string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f, ok := o.flights[callID]; ok {
		f.applied = true
	}
}

// warn reports whether a failure at now may be logged at warn level, and how
// many were not since the last one.
func (o *loadOrder) warn(now time.Time) (bool, int) {
	o.warnMu.Lock()
	defer o.warnMu.Unlock()
	if !o.lastWarn.IsZero() && now.Sub(o.lastWarn) < loadWarnEvery {
		o.suppressed++
		return false, 0
	}
	n := o.suppressed
	o.lastWarn, o.suppressed = now, 0
	return true, n
}

// commitAdd commits the LoadAdd of an algorithm-10 pick: within ctx (capped
// at dispatch.LoadCommitWait) for sync, in the background for async. nil
// means the call goes ahead with its entry (sync: committed; async: being
// committed).
func (r *Registry) commitAdd(ctx context.Context, sel Selection, add dispatch.Command) error {
	tracked := r.order.start(add.CallID)
	if r.opts.LoadReplication == LoadCommitAsync {
		r.bgMu.Lock()
		defer r.bgMu.Unlock()
		if !r.bgStopped {
			r.bg.Add(1)
			go func() {
				defer r.bg.Done()
				ctx, cancel := context.WithTimeout(r.bgCtx, min(r.opts.ProposeTimeout, dispatch.LoadCommitWait))
				defer cancel()
				_ = r.finishAdd(ctx, sel, add, tracked, LoadCommitAsync)
			}()
			return nil
		}
		return r.finishAdd(r.bgCtx, sel, add, tracked, LoadCommitAsync) // fails at once: bgCtx is done
	}
	ctx, cancel := context.WithTimeout(ctx, dispatch.LoadCommitWait)
	defer cancel()
	if err := r.finishAdd(ctx, sel, add, tracked, LoadCommitSync); err != nil {
		return fmt.Errorf("set %d: %w: %w", sel.SetID, ErrLoadNotCommitted, err)
	}
	return nil
}

// finishAdd proposes the add and ends its flight: on success the commands
// held behind it are queued; on failure the call's removal is queued
// instead, because the add may still commit later (a leader that lost its
// quorum keeps it in its log): whichever of the two commits first, the call
// is left without an entry (see dispatch.LateAddWindow).
func (r *Registry) finishAdd(ctx context.Context, sel Selection, add dispatch.Command, tracked bool, mode string) error {
	var err error
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	} else {
		err = r.propose(ctx, add)
	}
	if errors.Is(err, dispatch.ErrLoadExists) {
		// Another node's add for the same call (its INVITE retried here)
		// applied first: the call has its entry; it follows this pick.
		mv := add
		mv.Kind, mv.At = dispatch.CmdLoadMove, max(r.opts.Now().UnixNano(), add.At+1)
		r.queueLoad(mv)
		err = nil
	}
	after, committed := []dispatch.Command(nil), err == nil
	if tracked {
		after, committed = r.order.finish(add.CallID, err)
	}
	if committed {
		for _, c := range after {
			r.queueLoad(c)
		}
		return nil
	}
	if s, ok := r.Lookup(sel.SetID); ok {
		_ = s.send(unreserveMsg{callID: add.CallID})
	}
	rm := dispatch.Command{Kind: dispatch.CmdLoadRemove, At: max(r.opts.Now().UnixNano(), add.At+1), Set: add.Set, CallID: add.CallID}
	r.queueLoad(rm)
	for _, c := range after {
		// This set's confirms and moves have no entry to act on; commands
		// held for the same Call-ID in another set (a second pick) do.
		if c.Set != add.Set {
			r.queueLoad(c)
		}
	}
	if r.opts.OnLoadCommitFailure != nil {
		r.opts.OnLoadCommitFailure(mode)
	}
	if ok, n := r.order.warn(r.opts.Now()); ok {
		msg := "call-load commit failed; the call proceeds without a replicated entry"
		if mode == LoadCommitSync {
			msg = "call-load commit failed; the INVITE is refused (503)"
		}
		r.opts.Logger.Warn(msg, "set", sel.SetID, "err", err, "suppressed", n)
		return err
	}
	r.opts.Logger.Debug("call-load commit failed", "set", sel.SetID, "call_id", add.CallID, "err", err)
	return err
}

// queueLoad hands a confirm, move or removal to the load queue, behind the
// call's LoadAdd when this node is still proposing that. It keeps the
// command until it has committed, or until the entry it is about would have
// expired anyway.
func (r *Registry) queueLoad(c dispatch.Command) {
	if r.order.hold(c) {
		return
	}
	life := time.Duration(max(r.cfg.HashExpire, r.cfg.HashInitExpire)) * time.Second
	r.loads.add(c, c.Now().Add(life), false)
}

// AdoptLoad takes over a load command that another node could not commit
// (handed over by gossip): this node proposes it too until it commits.
// Commands are idempotent by Call-ID, so two nodes proposing one is safe.
func (r *Registry) AdoptLoad(c dispatch.Command) {
	switch c.Kind {
	case dispatch.CmdLoadConfirm, dispatch.CmdLoadMove, dispatch.CmdLoadRemove:
	default:
		return
	}
	life := time.Duration(max(r.cfg.HashExpire, r.cfg.HashInitExpire)) * time.Second
	if r.loads.add(c, c.Now().Add(life), true) {
		r.loads.adopted.Add(1)
	}
}

// PendingLoads lists this node's load commands that have failed at least
// once and waited more than older: the ones to hand over to other nodes.
func (r *Registry) PendingLoads(older time.Duration) []dispatch.Command {
	return r.loads.pending(older)
}

// LoadQueueStats reports the load queue's counters.
func (r *Registry) LoadQueueStats() LoadQueueStats { return r.loads.stats() }

// WaitLoads waits until every queued load command has committed (or been
// given up), or ctx ends: for a graceful stop, and for tests.
func (r *Registry) WaitLoads(ctx context.Context) error {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !r.loads.empty() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d load commands still pending: %w", r.loads.stats().Pending, ctx.Err())
		case <-t.C:
		}
	}
	return nil
}
