package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Errors returned by Set and Registry methods; test them with errors.Is.
var (
	// ErrBusy means the set's data mailbox is full: the caller sheds the
	// request (the proxy answers 503) rather than block its reader.
	ErrBusy = errors.New("set actor busy")
	// ErrStopped means the actor has stopped (shutdown or the set was removed).
	ErrStopped = errors.New("set actor stopped")
	// errPanic is returned to a caller whose message made the actor panic.
	errPanic = errors.New("set actor recovered from a panic")
)

// Set is the handle of one set actor. All methods are safe for concurrent
// use; they only send to the actor's mailbox and wait for its reply.
type Set struct {
	id   int
	data chan any // selects, marks, probes, load updates: bounded, never blocks a sender
	ctrl chan any // reloads: served before data
	stop chan struct{}
	done chan struct{}

	// dests is the actor's current destination list, published for lock-free
	// reads (FromSet) — the slice is never mutated after publication.
	dests atomic.Pointer[[]dispatch.Destination]

	// Owned by the actor goroutine only.
	state   *dispatch.SetState
	now     func() time.Time
	onEvent func(dispatch.Event)
	log     *slog.Logger
	buf     []int
	held    []int // per destination: reservations counted by an algorithm-10 pick
	panics  atomic.Int64

	// State changes are proposed, and the actor applies them when they come
	// back committed (applyMsg).
	prop       Proposer
	reserveTTL time.Duration
	pending    map[string]reservation // owned by the actor: algorithm-10 picks not yet applied
}

func newSet(st *dispatch.SetState, o *Options) *Set {
	s := &Set{
		id:      st.ID,
		data:    make(chan any, o.MailboxSize),
		ctrl:    make(chan any, 4),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		state:   st,
		now:     o.Now,
		onEvent: o.OnEvent,
		log:     o.Logger.With("set", st.ID),

		prop:       o.Proposer,
		reserveTTL: o.ReserveTimeout,
	}
	s.publish()
	go s.run()
	return s
}

// ID returns the set id.
func (s *Set) ID() int { return s.id }

func (s *Set) publish() {
	d := s.state.Dests
	s.dests.Store(&d)
}

// run is the actor loop: control messages first, then data, until stop.
func (s *Set) run() {
	defer close(s.done)
	for {
		select {
		case m := <-s.ctrl:
			s.handle(m)
			continue
		default:
		}
		select {
		case <-s.stop:
			return
		case m := <-s.ctrl:
			s.handle(m)
		case m := <-s.data:
			s.handle(m)
		}
	}
}

// handle serves one message; a panic is recovered, logged and reported to the
// waiting caller so that one bad request cannot take the set down.
func (s *Set) handle(m any) {
	defer func() {
		if r := recover(); r != nil {
			s.panics.Add(1)
			s.log.Error("set actor panic", "panic", r, "stack", string(debug.Stack()))
			s.failReply(m)
		}
	}()
	now := s.now()
	switch m := m.(type) {
	case selectMsg:
		m.reply <- s.doSelect(m, now)
	case probeTargetsMsg:
		var out []ProbeTarget
		for i := range s.state.Dests {
			if s.state.ShouldProbe(i) {
				out = append(out, ProbeTarget{SetID: s.id, Dest: s.state.Dests[i]})
			}
		}
		m.reply <- out
	case statusMsg:
		m.reply <- s.status(m.entries)
	case replaceMsg:
		if !m.restore {
			if dropped := m.next.CarryOver(s.state); dropped > 0 {
				s.log.Warn("reload dropped call-load entries of removed destinations", "count", dropped)
			}
		}
		s.state = m.next
		clear(s.pending) // indexes changed; the committed LoadAdds count the calls
		s.publish()
		m.reply <- struct{}{}
	case applyMsg:
		m.reply <- s.doApply(m.c)
	case snapshotMsg:
		b, err := s.state.MarshalState()
		m.reply <- snapshotResult{b: b, err: err}
	case unreserveMsg:
		delete(s.pending, m.callID)
	default:
		s.log.Error("set actor: unknown message", "type", fmt.Sprintf("%T", m))
	}
}

// failReply answers the waiting caller of m after a panic.
func (s *Set) failReply(m any) {
	switch m := m.(type) {
	case selectMsg:
		m.reply <- selectResult{err: errPanic}
	case probeTargetsMsg:
		m.reply <- nil
	case statusMsg:
		m.reply <- SetStatus{ID: s.id}
	case replaceMsg:
		m.reply <- struct{}{}
	case applyMsg:
		m.reply <- applyResult{err: errPanic}
	case snapshotMsg:
		m.reply <- snapshotResult{err: errPanic}
	}
}

func (s *Set) doSelect(m selectMsg, now time.Time) selectResult {
	sel, err := s.selectHeld(m, now)
	s.buf = sel.Order[:0]
	if err != nil {
		return selectResult{err: err}
	}
	out := Selection{
		SetID:    s.id,
		Alg:      sel.Alg,
		Hash:     sel.Hash,
		Parallel: sel.Parallel,
		Dests:    make([]dispatch.Destination, len(sel.Order)),
	}
	for k, i := range sel.Order {
		out.Dests[k] = s.state.Dests[i]
	}
	// Algorithm 10 counts calls: the INVITE that got a destination is one more
	// call on it until a reply, CANCEL, BYE or expiry ends it
	// (docs/configuration.md, call load).
	if m.alg == dispatch.AlgCallLoad && m.req.Method == "INVITE" && len(sel.Order) > 0 && s.state.Config().HashSize > 0 {
		add, err := s.reserve(m.req.CallID, sel.Order[0], now)
		if err != nil {
			return selectResult{err: err}
		}
		return selectResult{sel: out, add: add}
	}
	return selectResult{sel: out}
}

func (s *Set) emit(ev dispatch.Event) {
	s.log.Info("destination state changed", "event", eventName(ev), "uri", ev.URI, "duid", ev.DUID,
		"old", ev.Old.Letters(), "new", ev.New.Letters())
	if s.onEvent != nil {
		s.onEvent(ev)
	}
}

func eventName(ev dispatch.Event) string {
	if ev.Up {
		return "dst-up"
	}
	return "dst-down"
}

func (s *Set) status(entries bool) SetStatus {
	st := SetStatus{ID: s.id, Dests: make([]DestStatus, len(s.state.Dests)), Calls: s.state.LoadCount(),
		Reserved: len(s.pending), Ended: s.state.EndedCount()}
	for i := range s.state.Dests {
		st.Dests[i] = DestStatus{Destination: s.state.Dests[i], State: s.state.State[i]}
	}
	if entries {
		st.Entries = s.state.LoadEntries(nil)
	}
	return st
}

// send puts m on the data lane without blocking.
func (s *Set) send(m any) error {
	select {
	case <-s.done:
		return ErrStopped
	default:
	}
	select {
	case s.data <- m:
		return nil
	default:
		return fmt.Errorf("set %d: %w", s.id, ErrBusy)
	}
}

// await waits for a reply, the caller's ctx or the actor's end.
func await[T any](ctx context.Context, s *Set, reply chan T) (T, error) {
	var zero T
	select {
	case v := <-reply:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-s.done:
		// The actor may have answered just before stopping.
		select {
		case v := <-reply:
			return v, nil
		default:
			return zero, ErrStopped
		}
	}
}

// selectReserve asks the actor for a selection and, for an algorithm-10
// INVITE, the LoadAdd of its reserved pick (nil: none to commit).
func (s *Set) selectReserve(ctx context.Context, req *dispatch.Request, alg dispatch.Algorithm, limit int) (Selection, *dispatch.Command, error) {
	reply := make(chan selectResult, 1)
	if err := s.send(selectMsg{req: req, alg: alg, limit: limit, reply: reply}); err != nil {
		return Selection{}, nil, err
	}
	r, err := await(ctx, s, reply)
	if err != nil {
		// The actor may still reserve the pick; its reservation times out.
		return Selection{}, nil, err
	}
	return r.sel, r.add, r.err
}

// Mark applies a ds_mark_dst / set_state operation to the destination with
// uri ("all" for every destination).
func (s *Set) Mark(ctx context.Context, uri string, op dispatch.MarkOp) error {
	return s.mark(ctx, markMsg{uri: uri, op: op})
}

// MarkDUID applies op to the destination with this duid.
func (s *Set) MarkDUID(ctx context.Context, duid string, op dispatch.MarkOp) error {
	return s.mark(ctx, markMsg{uri: duid, byDUID: true, op: op})
}

func (s *Set) mark(ctx context.Context, m markMsg) error {
	return s.proposeMark(ctx, m)
}

// Status returns a copy of the set's destinations and runtime state; with
// entries, its call-load entries too.
func (s *Set) Status(ctx context.Context, entries bool) (SetStatus, error) {
	reply := make(chan SetStatus, 1)
	if err := s.send(statusMsg{entries: entries, reply: reply}); err != nil {
		return SetStatus{}, err
	}
	return await(ctx, s, reply)
}

// replace hands the actor a reloaded SetState on the control lane and waits
// until it has carried its state over.
func (s *Set) replace(ctx context.Context, next *dispatch.SetState, restore bool) error {
	reply := make(chan struct{}, 1)
	select {
	case s.ctrl <- replaceMsg{next: next, restore: restore, reply: reply}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.done:
		return ErrStopped
	}
	_, err := await(ctx, s, reply)
	return err
}

// close stops the actor after the message it is serving and waits for it.
func (s *Set) close() {
	select {
	case <-s.stop:
	default:
		close(s.stop)
	}
	<-s.done
}
