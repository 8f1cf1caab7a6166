package actors

import (
	"context"
	"sync"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Load-commit modes, the mode label of Options.OnLoadCommitFailure.
const (
	LoadCommitSync  = "sync"
	LoadCommitAsync = "async"
)

// maxFailedLoads bounds loadOrder.failed: 1000 failed adds a second for
// over a minute.
const maxFailedLoads = 1 << 16

// loadWarnEvery rate-limits the warning about failed background LoadAdds:
// without a quorum every alg-10 INVITE fails one, at the call rate.
const loadWarnEvery = 10 * time.Second

// flight is a LoadAdd this node is proposing. Load commands for its Call-ID
// issued meanwhile wait in after, so that this node never proposes a call's
// confirm, move or remove before its add (two independent proposals could
// commit in either order). applied is set when the add reaches Apply, so a
// proposal that fails after its command applied still counts as committed.
type flight struct {
	after   []dispatch.Command
	applied bool
}

// loadOrder orders one node's proposals per Call-ID. It is local, not
// replicated state: it only decides when, and whether, this node proposes;
// what the commands do is decided by the log order alone.
type loadOrder struct {
	mu      sync.Mutex
	flights map[string]*flight
	// failed holds the Call-IDs whose LoadAdd proposal failed, until the
	// entry it would create expires anyway (ds_hash_initexpire after the
	// command's time): a leader that lost its quorum keeps the command in
	// its log, and a later term may commit it after any delay. If it does,
	// this node proposes its removal, so a failed add leaves no entry behind.
	// At most maxFailedLoads are kept; past that the expiry sweep is the
	// bound.
	failed map[string]time.Time

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

// hold holds c back when its Call-ID's LoadAdd is in flight, and drops it
// when that add failed here (there is no entry; should the add commit late,
// applied has it removed). False: c may be proposed now.
func (o *loadOrder) hold(c dispatch.Command, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f, ok := o.flights[c.CallID]; ok {
		f.after = append(f.after, c)
		return true
	}
	dl, ok := o.failed[c.CallID]
	return ok && !now.After(dl)
}

// finish ends the flight of callID. With the add committed it returns the
// commands held back, to be proposed in order; without, it drops them (the
// call has no entry to confirm, move or remove) and remembers the Call-ID
// until until, in case the add commits after all. committed reports which.
func (o *loadOrder) finish(callID string, proposeErr error, now, until time.Time) (after []dispatch.Command, committed bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	f := o.flights[callID]
	delete(o.flights, callID)
	if f == nil {
		return nil, proposeErr == nil
	}
	if proposeErr == nil || f.applied {
		return f.after, true
	}
	if len(o.failed) >= maxFailedLoads {
		o.pruneFailed(now)
	}
	if o.failed == nil {
		o.failed = make(map[string]time.Time)
	}
	o.failed[callID] = until
	return nil, false
}

// pruneFailed drops the expired entries of failed and, if that is not
// enough, arbitrary ones down to three quarters of maxFailedLoads (their
// late commits, if any, are left to the expiry sweep). Amortised: it runs
// only when the map is full.
func (o *loadOrder) pruneFailed(now time.Time) {
	for id, dl := range o.failed {
		if now.After(dl) {
			delete(o.failed, id)
		}
	}
	for id := range o.failed {
		if len(o.failed) < maxFailedLoads*3/4 {
			break
		}
		delete(o.failed, id)
	}
}

// applied notes that a LoadAdd for callID was applied on this node; true
// when its proposal had already failed here, so that the entry must go.
func (o *loadOrder) applied(callID string, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f, ok := o.flights[callID]; ok {
		f.applied = true
		return false
	}
	dl, ok := o.failed[callID]
	if !ok {
		return false
	}
	delete(o.failed, callID)
	return !now.After(dl)
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

// CommitLoad proposes the call-load entry of a replicated algorithm-10
// selection (Selection.LoadCommand; nothing to do when nil) and waits for it
// within ctx: load_replication sync, where the INVITE is forwarded only
// after this returns nil. On failure the set's reservation is dropped at
// once instead of at its timeout, and the error is returned: the call has no
// load entry (should the command commit late, this node proposes its
// removal).
func (r *Registry) CommitLoad(ctx context.Context, sel Selection) error {
	if sel.LoadCommand == nil {
		return nil
	}
	tracked := r.order.start(sel.LoadCommand.CallID)
	return r.commitLoad(ctx, sel, tracked, LoadCommitSync)
}

// CommitLoadAsync is CommitLoad without waiting (load_replication async):
// the LoadAdd is proposed in the background, bounded by ProposeTimeout, while
// the caller forwards the INVITE. It never blocks. Load commands issued for
// the Call-ID before the proposal finished are proposed after it; a failure
// is counted (Options.OnLoadCommitFailure) and logged at most every
// loadWarnEvery at warn level, else at debug: the call goes on without an
// entry, and its later confirm or remove finds nothing.
func (r *Registry) CommitLoadAsync(sel Selection) {
	if sel.LoadCommand == nil {
		return
	}
	// Registered before returning, so that anything the forwarded INVITE
	// leads to on this node orders behind it.
	tracked := r.order.start(sel.LoadCommand.CallID)
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.bgStopped {
		_ = r.commitLoad(r.bgCtx, sel, tracked, LoadCommitAsync) // fails at once: bgCtx is done
		return
	}
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		ctx, cancel := context.WithTimeout(r.bgCtx, r.opts.ProposeTimeout)
		defer cancel()
		_ = r.commitLoad(ctx, sel, tracked, LoadCommitAsync)
	}()
}

// commitLoad is the one implementation of both modes: propose, end the
// flight, then propose what it held back, or count and report the failure.
func (r *Registry) commitLoad(ctx context.Context, sel Selection, tracked bool, mode string) error {
	c := *sel.LoadCommand
	var err error
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	} else {
		err = r.propose(ctx, c)
	}
	if !tracked {
		if err != nil {
			r.loadCommitFailed(sel, mode, err)
		}
		return err
	}
	expires := c.Now().Add(time.Duration(r.cfg.HashInitExpire) * time.Second)
	after, committed := r.order.finish(c.CallID, err, r.opts.Now(), expires)
	if !committed {
		r.loadCommitFailed(sel, mode, err)
		return err
	}
	if len(after) > 0 {
		r.backgroundSeq(after)
	}
	return nil
}

func (r *Registry) loadCommitFailed(sel Selection, mode string, err error) {
	if s, ok := r.Lookup(sel.SetID); ok {
		_ = s.send(unreserveMsg{callID: sel.LoadCommand.CallID})
	}
	if r.opts.OnLoadCommitFailure != nil {
		r.opts.OnLoadCommitFailure(mode)
	}
	if mode == LoadCommitSync {
		return // the caller answers 503 and logs
	}
	if ok, n := r.order.warn(r.opts.Now()); ok {
		r.opts.Logger.Warn("call-load commit failed; the call proceeds without a replicated entry",
			"set", sel.SetID, "err", err, "suppressed", n)
		return
	}
	r.opts.Logger.Debug("call-load commit failed", "set", sel.SetID, "call_id", sel.LoadCommand.CallID, "err", err)
}

// proposeLoad proposes a confirm, move or remove, after the Call-ID's
// LoadAdd when this node is still proposing that; then it returns nil at
// once, as the outcome is decided when the add's proposal finishes. A
// command for a Call-ID whose add failed here is dropped: without a quorum
// a call's BYE costs no proposal. Only the add must come first: confirm,
// move and remove need no order among themselves, as none of them creates
// an entry (each finds it or changes nothing), so a held confirm may still
// commit after a later, directly proposed remove.
func (r *Registry) proposeLoad(ctx context.Context, c dispatch.Command) error {
	if r.order.hold(c, r.opts.Now()) {
		return nil
	}
	return r.propose(ctx, c)
}

// afterApply runs on the FSM goroutine after a command applied without
// error: a LoadAdd whose proposal already failed on this node is removed
// again through the log.
func (r *Registry) afterApply(c dispatch.Command) {
	if c.Kind != dispatch.CmdLoadAdd || !r.order.applied(c.CallID, r.opts.Now()) {
		return
	}
	r.backgroundSeq([]dispatch.Command{{Kind: dispatch.CmdLoadRemove, At: r.opts.Now().UnixNano(), Set: c.Set, CallID: c.CallID}})
}
