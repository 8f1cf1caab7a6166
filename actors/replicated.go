package actors

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Proposer is the port a replicated Registry writes through; the cluster
// adapts its node to it. Propose returns once c has committed and has been
// applied on this node (through Registry.Apply), so the caller reads its own
// write; it should return that local Apply's error. On any other error the
// command may or may not have committed; load commands are idempotent by
// Call-ID, so retrying them is safe. Request goroutines call it and it may
// block until ctx ends; it must never be called from the goroutine that calls
// Registry.Apply.
type Proposer interface {
	Propose(ctx context.Context, c dispatch.Command) error
}

// Defaults of the replicated mode's Options.
const (
	defaultReserveTimeout = 10 * time.Second
	defaultProposeTimeout = 5 * time.Second
)

// reservation is a call-load pick that was proposed but not yet applied.
type reservation struct {
	dest     int // index into the actor's current Dests
	deadline time.Time
}

// Apply applies one committed command. The cluster's FSM calls it for every
// command in log order, from one goroutine; it hands the command to the
// owning set actor's control lane and waits until the actor has applied it
// with dispatch.SetState.Apply, so the log's order is the only order in which
// replicated state changes. The returned events were already logged and
// passed to Options.OnEvent by the actors.
//
// CmdReplaceSets rebuilds the sets from the command's destinations with
// dispatch.BuildSets and installs them as Replace does. A command with Set < 0
// goes to the sets in ascending id order: CmdLoadExpire to each of them, a
// CmdLoadRemove until one knows the Call-ID, and when none does, to each of
// them again addressed to it, so that every set keeps the call's tombstone.
// Errors are as deterministic as the state: every node returns the same one.
func (r *Registry) Apply(c dispatch.Command) ([]dispatch.Event, error) {
	switch c.Kind {
	case dispatch.CmdReplaceSets:
		return nil, r.applyReplace(c)
	case dispatch.CmdAddDest, dispatch.CmdRemoveDest:
		return nil, r.applyEdit(c)
	}
	defer r.afterApply(&c)
	if c.Set >= 0 {
		s, err := r.lookup(c.Set)
		if err != nil {
			return nil, err
		}
		res, err := s.apply(c)
		if err == nil && c.Kind == dispatch.CmdLoadAdd {
			r.order.applied(c.CallID)
		}
		r.expired.Add(uint64(res.Expired))
		return res.Events, err
	}
	var errs []error
	ids := r.IDs()
	for _, id := range ids {
		s, ok := r.Lookup(id)
		if !ok {
			continue
		}
		res, err := s.apply(c)
		r.expired.Add(uint64(res.Expired))
		switch {
		case err != nil:
			errs = append(errs, err)
		case res.Found && c.Kind == dispatch.CmdLoadRemove:
			return nil, nil
		}
	}
	if c.Kind == dispatch.CmdLoadRemove && len(errs) == 0 {
		for _, id := range ids {
			if s, ok := r.Lookup(id); ok {
				one := c
				one.Set = id
				if _, err := s.apply(one); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	return nil, errors.Join(errs...)
}

// afterApply runs on the applying goroutine after every command: the load
// queue drops a pending command that this one fulfils.
func (r *Registry) afterApply(c *dispatch.Command) {
	switch c.Kind {
	case dispatch.CmdLoadConfirm, dispatch.CmdLoadMove, dispatch.CmdLoadRemove:
		r.loads.applied(c)
	}
}

// ExpiredLoads counts the call-load entries that expiry sweeps removed since
// the registry started: calls whose end was never seen.
func (r *Registry) ExpiredLoads() uint64 { return r.expired.Load() }

func (r *Registry) applyReplace(c dispatch.Command) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	states, err := r.buildLocked(dispatch.BuildSets(c.Dests), r.rngLocked)
	if err != nil {
		return err
	}
	return r.installLocked(context.Background(), states, false)
}

// applyEdit applies a runtime add or remove to the installed sets, carrying
// state and load over as a reload does.
func (r *Registry) applyEdit(c dispatch.Command) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	sets, err := editSets(r.defs, c)
	if err != nil {
		return err
	}
	states, err := r.buildLocked(sets, r.rngLocked)
	if err != nil {
		return err
	}
	return r.installLocked(context.Background(), states, false)
}

// editSets returns defs changed by a CmdAddDest or CmdRemoveDest.
func editSets(defs []dispatch.Set, c dispatch.Command) ([]dispatch.Set, error) {
	if c.Kind == dispatch.CmdRemoveDest {
		return dispatch.RemoveDestination(defs, c.Set, c.URI)
	}
	if len(c.Dests) != 1 {
		return nil, fmt.Errorf("%s with %d destinations, want 1: %w", c.Kind, len(c.Dests), dispatch.ErrBadCommand)
	}
	return dispatch.AddDestination(defs, c.Dests[0]), nil
}

// Snapshot encodes the replicated state of every set, in the sets' order
// (SetOrder, which Restore installs again so dispatcher.list keeps
// Kamailio's order), as each actor holds it when it serves the request on
// its control lane. Called on the FSM goroutine between two Apply calls, it
// captures the state as of the last applied command. Sets with equal state
// give equal bytes on every node.
func (r *Registry) Snapshot(ctx context.Context) ([]byte, error) {
	ids := r.SetOrder()
	parts := make([][]byte, 0, len(ids))
	for _, id := range ids {
		s, ok := r.Lookup(id)
		if !ok {
			continue
		}
		b, err := s.snapshot(ctx)
		if err != nil {
			return nil, fmt.Errorf("snapshot set %d: %w", id, err)
		}
		parts = append(parts, b)
	}
	return dispatch.EncodeSnapshot(parts)
}

// Restore replaces every set with the sets and state of a Snapshot: state is
// adopted as encoded, not carried over; sets missing from it are stopped. A
// malformed snapshot changes nothing.
func (r *Registry) Restore(b []byte) error {
	parts, err := dispatch.DecodeSnapshot(b)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	states := make([]*dispatch.SetState, len(parts))
	seen := make(map[int]bool, len(parts))
	for i, p := range parts {
		st, err := dispatch.RestoreSetState(p, r.cfg, r.rngLocked())
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if seen[st.ID] {
			return fmt.Errorf("restore: set %d appears twice: %w", st.ID, dispatch.ErrMalformed)
		}
		seen[st.ID] = true
		states[i] = st
	}
	return r.installLocked(context.Background(), states, true)
}

func (r *Registry) propose(ctx context.Context, c dispatch.Command) error {
	if err := r.opts.Proposer.Propose(ctx, c); err != nil {
		return fmt.Errorf("propose %s set %d: %w", c.Kind, c.Set, err)
	}
	return nil
}

// proposeReplace validates sets as Replace would, then proposes them as one
// CmdReplaceSets; the sets change when the command is applied. sets must be
// in BuildSets' order (every source builds them so), as every node rebuilds
// them from their flattened destinations.
func (r *Registry) proposeReplace(ctx context.Context, sets []dispatch.Set) error {
	r.mu.Lock()
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return ErrStopped
	}
	scratch := func() *rand.Rand { return rand.New(rand.NewPCG(0, 0)) }
	if _, err := r.buildLocked(sets, scratch); err != nil {
		return err
	}
	return r.propose(ctx, dispatch.Command{Kind: dispatch.CmdReplaceSets, At: r.opts.Now().UnixNano(),
		Dests: dispatch.FlattenSets(sets)})
}

// background proposes c without a waiting caller (probe results, expiry
// sweeps); see backgroundSeq.
func (r *Registry) background(c dispatch.Command) {
	r.backgroundSeq([]dispatch.Command{c})
}

// backgroundSeq proposes cs one after the other without a waiting caller,
// each bounded by ProposeTimeout and all cancelled by Stop; failures are
// logged, and the next probe or sweep repeats the fact.
func (r *Registry) backgroundSeq(cs []dispatch.Command) {
	r.bgMu.Lock()
	defer r.bgMu.Unlock()
	if r.bgStopped {
		return
	}
	r.bg.Add(1)
	go func() {
		defer r.bg.Done()
		for _, c := range cs {
			ctx, cancel := context.WithTimeout(r.bgCtx, r.opts.ProposeTimeout)
			err := r.propose(ctx, c)
			cancel()
			if err != nil {
				r.opts.Logger.Warn("background proposal failed", "kind", c.Kind.String(), "set", c.Set, "err", err)
			}
		}
	}()
}

// stopBackground cancels background proposals and waits for them.
func (r *Registry) stopBackground() {
	r.bgMu.Lock()
	r.bgStopped = true
	r.bgMu.Unlock()
	r.bgCancel()
	r.bg.Wait()
}

// findDest returns the destination with this uri (or duid) from the published
// list, without asking the actor.
func (s *Set) findDest(key string, byDUID bool) (dispatch.Destination, bool) {
	for _, d := range *s.dests.Load() {
		if (byDUID && d.Attrs.DUID == key) || (!byDUID && d.URI == key) {
			return d, true
		}
	}
	return dispatch.Destination{}, false
}

// command starts a command for this set at now, addressed to d when not nil.
func (s *Set) command(kind dispatch.CommandKind, d *dispatch.Destination, now time.Time) dispatch.Command {
	c := dispatch.Command{Kind: kind, At: now.UnixNano(), Set: s.id}
	if d != nil {
		c.DUID, c.URI = dispatch.DestRef(d)
	}
	return c
}

func (s *Set) propose(ctx context.Context, c dispatch.Command) error {
	if err := s.prop.Propose(ctx, c); err != nil {
		return fmt.Errorf("set %d: propose %s: %w", s.id, c.Kind, err)
	}
	return nil
}

// proposeMark is Mark in replicated mode: the destination is checked against
// the published list and addressed by duid when it has one, so the command
// still finds it after a reload that changed its URI.
func (s *Set) proposeMark(ctx context.Context, m markMsg) error {
	if m.uri == "all" && !m.byDUID {
		c := s.command(dispatch.CmdMark, nil, s.now())
		c.URI, c.Op = "all", m.op
		return s.propose(ctx, c)
	}
	d, ok := s.findDest(m.uri, m.byDUID)
	if !ok {
		return fmt.Errorf("set %d: %q: %w", s.id, m.uri, dispatch.ErrUnknownDestination)
	}
	c := s.command(dispatch.CmdMark, &d, s.now())
	c.Op = m.op
	return s.propose(ctx, c)
}

// apply hands a committed command to the actor's control lane and waits for
// its result. It does not give up before the actor answers or stops: the FSM
// must not move on before the command is applied.
func (s *Set) apply(c dispatch.Command) (dispatch.ApplyResult, error) {
	reply := make(chan applyResult, 1)
	select {
	case s.ctrl <- applyMsg{c: c, reply: reply}:
	case <-s.done:
		return dispatch.ApplyResult{}, fmt.Errorf("set %d: %w", s.id, ErrStopped)
	}
	r, err := await(context.Background(), s, reply)
	if err != nil {
		return dispatch.ApplyResult{}, fmt.Errorf("set %d: %w", s.id, err)
	}
	return r.res, r.err
}

// snapshot asks the actor, on its control lane, for its encoded state.
func (s *Set) snapshot(ctx context.Context) ([]byte, error) {
	reply := make(chan snapshotResult, 1)
	select {
	case s.ctrl <- snapshotMsg{reply: reply}:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrStopped
	}
	r, err := await(ctx, s, reply)
	if err != nil {
		return nil, err
	}
	return r.b, r.err
}

// doApply applies a committed command on the actor goroutine.
func (s *Set) doApply(c dispatch.Command) applyResult {
	res, err := s.state.Apply(c)
	if c.Kind == dispatch.CmdLoadAdd {
		delete(s.pending, c.CallID) // committed (or refused): the real load counts now
	}
	for _, ev := range res.Events {
		s.emit(ev)
	}
	if res.Expired > 0 {
		s.log.Info("call-load entries expired", "count", res.Expired)
	}
	return applyResult{res: res, err: err}
}

// selectHeld is SetState.SelectHeld with the reservations of algorithm 10
// counted on their destinations; expired reservations are dropped on the way.
func (s *Set) selectHeld(m selectMsg, now time.Time) (dispatch.Selection, error) {
	var held []int
	if m.alg == dispatch.AlgCallLoad && len(s.pending) > 0 {
		if n := len(s.state.Dests); cap(s.held) < n {
			s.held = make([]int, n)
		} else {
			s.held = s.held[:n]
			clear(s.held)
		}
		for id, rv := range s.pending {
			if now.After(rv.deadline) {
				delete(s.pending, id)
				continue
			}
			s.held[rv.dest]++
		}
		held = s.held
	}
	return s.state.SelectHeld(m.req, m.alg, m.limit, now, s.buf[:0], held)
}

// reserve records an algorithm-10 pick and returns the LoadAdd the caller
// must commit. When the Call-ID already has an entry — the same call's
// INVITE retried through this node after another one went silent — it
// returns a LoadMove of that entry to this pick instead, so that the call
// stays counted, and on the gateway that now carries it. ErrLoadInFlight
// when the Call-ID's add is being committed here (a retransmission).
func (s *Set) reserve(callID string, i int, now time.Time) (*dispatch.Command, error) {
	if _, ok := s.pending[callID]; ok {
		return nil, fmt.Errorf("set %d: %w", s.id, ErrLoadInFlight)
	}
	callID = strings.Clone(callID) // may point into a whole SIP message
	if s.state.HasLoad(callID) {
		c := s.command(dispatch.CmdLoadMove, &s.state.Dests[i], now)
		c.CallID = callID
		return &c, nil
	}
	if s.pending == nil {
		s.pending = make(map[string]reservation)
	}
	s.pending[callID] = reservation{dest: i, deadline: now.Add(s.reserveTTL)}
	c := s.command(dispatch.CmdLoadAdd, &s.state.Dests[i], now)
	c.CallID = callID
	return &c, nil
}
