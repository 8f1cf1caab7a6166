package dispatch

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Call-load errors; callers test them with errors.Is.
var (
	// ErrLoadExists means the Call-ID already has a load entry (a retransmitted
	// or forked INVITE); the load is not counted twice.
	ErrLoadExists = errors.New("call-id already has a load entry")
	// ErrBadIndex means a destination index outside the set.
	ErrBadIndex = errors.New("destination index out of range")
	// ErrLoadRefused means a replicated LoadAdd that may no longer create an
	// entry: its call already ended (a removal for the Call-ID applied first,
	// see LateAddWindow) or it committed later than LateAddWindow after it
	// was proposed. Its proposer has given up on it and queued its removal.
	ErrLoadRefused = errors.New("call-load add refused")
)

// LateAddWindow bounds how long after its proposal (Command.At) a LoadAdd may
// still create an entry, measured against the latest command time the set
// applied. A proposer waits at most LoadCommitWait for its add, then treats
// it as failed and has its removal committed; an add that commits later than
// the window is refused, so the record of an ended call (a tombstone, see
// LoadRemoveCmd) need only outlive the window. Twice LoadCommitWait plus room
// for clock skew between nodes.
const LateAddWindow = 30 * time.Second

// LoadCommitWait is the longest a proposer waits for its LoadAdd to commit
// before it gives the call up (answers 503, or goes on without an entry).
const LoadCommitWait = 10 * time.Second

// maxLoadHint caps the initial size of a set's table: ds_hash_size may ask for
// 2^24 slots, which would preallocate hundreds of MB for every set.
const maxLoadHint = 1 << 16

// LoadTable is the call-load table of one set (algorithm 10): Call-ID →
// destination, state and expiry. It is Kamailio's ds_ht, kept per set so that
// one set's owner drives it alone.
type LoadTable struct {
	m map[string]loadEntry
	// ended holds the Call-IDs that a replicated removal found no entry for,
	// with that removal's time: a LoadAdd of the same Call-ID proposed
	// before it (overtaken by the removal, or failed and committed late) is
	// refused. Entries are dropped LateAddWindow after their time.
	ended map[string]int64
	// clock is the latest command time (Command.At) applied, unix
	// nanoseconds: the log's own clock, the same on every node.
	clock int64
}

// loadEntry is kept small (24 bytes) for tables of a million calls.
type loadEntry struct {
	since     int64 // unix nanoseconds: when the call was placed
	expires   int64 // unix nanoseconds
	dest      int32 // index into the set's Dests
	confirmed bool
}

// LoadEntry is one call-load entry as the RPC, the load command and snapshots
// see it.
type LoadEntry struct {
	CallID    string
	Dest      int       // index into SetState.Dests
	Confirmed bool      // a 2xx was seen
	Since     time.Time // when the call was placed (its LoadAdd's time)
	Expires   time.Time // removed by LoadExpire after this instant
}

func newLoadTable(hashSize int) LoadTable {
	hint := 0
	if hashSize > 0 {
		hint = min(1<<hashSize, maxLoadHint)
	}
	return LoadTable{m: make(map[string]loadEntry, hint), ended: make(map[string]int64)}
}

// LoadAdd records a call on destination i (a selected INVITE, algorithm 10):
// an initial entry expiring ds_hash_initexpire seconds after now. A Call-ID
// already present is ErrLoadExists and counts nothing.
func (s *SetState) LoadAdd(callID string, i int, now time.Time) error {
	if i < 0 || i >= len(s.Dests) {
		return fmt.Errorf("load add %q: %w: %d of %d", callID, ErrBadIndex, i, len(s.Dests))
	}
	if _, ok := s.load.m[callID]; ok {
		return fmt.Errorf("load add %q: %w", callID, ErrLoadExists)
	}
	exp := now.Add(time.Duration(s.cfg.HashInitExpire) * time.Second)
	// Clone: the Call-ID may point into a whole SIP message the table must
	// not keep alive for hours.
	s.load.m[strings.Clone(callID)] = loadEntry{since: now.UnixNano(), expires: exp.UnixNano(), dest: int32(i)}
	s.State[i].Load++
	return nil
}

// loadAddCmd applies a replicated LoadAdd at time at: refused when the call
// already ended or the add is older than the window (ErrLoadRefused).
func (s *SetState) loadAddCmd(callID string, i int, at int64) error {
	if end, ok := s.load.ended[callID]; ok && at <= end {
		return fmt.Errorf("load add %q: %w: the call ended before the add applied", callID, ErrLoadRefused)
	}
	if late := time.Duration(s.load.clock - at); late > LateAddWindow {
		return fmt.Errorf("load add %q: %w: applied %v after it was proposed (window %v; check the nodes' clocks)",
			callID, ErrLoadRefused, late.Round(time.Millisecond), LateAddWindow)
	}
	return s.LoadAdd(callID, i, time.Unix(0, at))
}

// loadRemoveCmd applies a replicated LoadRemove at time at. A removal that
// finds no entry leaves a tombstone, so that the call's add, should it
// apply later, creates none; tomb false is for a removal addressed to any
// set, whose owner records tombstones only once no set had the call.
func (s *SetState) loadRemoveCmd(callID string, at int64, tomb bool) bool {
	if s.LoadRemove(callID) {
		return true
	}
	if tomb && at > s.load.ended[callID] {
		s.load.ended[strings.Clone(callID)] = at
	}
	return false
}

// tick advances the log clock to at.
func (s *SetState) tick(at int64) {
	if at > s.load.clock {
		s.load.clock = at
	}
}

// pruneEnded drops the tombstones older than the window at the log clock.
func (s *SetState) pruneEnded() {
	for id, at := range s.load.ended {
		if time.Duration(s.load.clock-at) > LateAddWindow {
			delete(s.load.ended, id)
		}
	}
}

// EndedCount returns how many tombstones of ended calls the set holds.
func (s *SetState) EndedCount() int { return len(s.load.ended) }

// LoadConfirm marks the call answered (2xx to the INVITE): it now expires
// ds_hash_expire seconds after now. Kamailio counts that lifetime from the
// INVITE; counting it from the answer keeps long-ringing calls, and the
// difference is at most the ringing time. False if the Call-ID is unknown.
func (s *SetState) LoadConfirm(callID string, now time.Time) bool {
	e, ok := s.load.m[callID]
	if !ok {
		return false
	}
	e.confirmed = true
	e.expires = now.Add(time.Duration(s.cfg.HashExpire) * time.Second).UnixNano()
	s.load.m[callID] = e
	return true
}

// LoadRemove ends the call (BYE, CANCEL, a final reply >= 300); false if the
// Call-ID is unknown, so a second BYE changes nothing.
func (s *SetState) LoadRemove(callID string) bool {
	e, ok := s.load.m[callID]
	if !ok {
		return false
	}
	delete(s.load.m, callID)
	s.unload(int(e.dest))
	return true
}

// LoadMove moves the call to destination i: a failover to the next
// destination of the selection (Kamailio's ds_load_replace in ds_next_dst).
// False if the Call-ID is unknown or i is out of range.
func (s *SetState) LoadMove(callID string, i int) bool {
	e, ok := s.load.m[callID]
	if !ok || i < 0 || i >= len(s.Dests) || int(e.dest) == i {
		return ok && int(e.dest) == i
	}
	s.unload(int(e.dest))
	e.dest = int32(i)
	s.load.m[callID] = e
	s.State[i].Load++
	return true
}

// unload takes one call off destination i, never below zero.
func (s *SetState) unload(i int) {
	if s.State[i].Load > 0 {
		s.State[i].Load--
	}
}

// LoadExpire removes the entries whose lifetime ended before now (unconfirmed
// after ds_hash_initexpire, confirmed after ds_hash_expire) and returns how
// many it removed. It walks the whole table, as Kamailio's ds_ht_timer does;
// it runs every ds_hash_check_interval seconds.
func (s *SetState) LoadExpire(now time.Time) int {
	t := now.UnixNano()
	n := 0
	for id, e := range s.load.m {
		if e.expires < t {
			delete(s.load.m, id)
			s.unload(int(e.dest))
			n++
		}
	}
	return n
}

// LoadCount returns the number of calls in the table.
func (s *SetState) LoadCount() int { return len(s.load.m) }

// LoadEntries appends every entry to dst, sorted by Call-ID so that output and
// snapshots are deterministic, and returns the extended slice.
func (s *SetState) LoadEntries(dst []LoadEntry) []LoadEntry {
	start := len(dst)
	for id, e := range s.load.m {
		dst = append(dst, LoadEntry{
			CallID:    id,
			Dest:      int(e.dest),
			Confirmed: e.confirmed,
			Since:     time.Unix(0, e.since),
			Expires:   time.Unix(0, e.expires),
		})
	}
	out := dst[start:]
	sort.Slice(out, func(i, j int) bool { return out[i].CallID < out[j].CallID })
	return dst
}

// LoadRestore inserts an entry as it was read from LoadEntries (a snapshot
// being restored), counting it on its destination. A duplicate Call-ID is
// ErrLoadExists, a destination outside the set ErrBadIndex.
func (s *SetState) LoadRestore(e LoadEntry) error {
	if e.Dest < 0 || e.Dest >= len(s.Dests) {
		return fmt.Errorf("load restore %q: %w: %d of %d", e.CallID, ErrBadIndex, e.Dest, len(s.Dests))
	}
	if _, ok := s.load.m[e.CallID]; ok {
		return fmt.Errorf("load restore %q: %w", e.CallID, ErrLoadExists)
	}
	s.load.m[strings.Clone(e.CallID)] = loadEntry{since: e.Since.UnixNano(), expires: e.Expires.UnixNano(), dest: int32(e.Dest), confirmed: e.Confirmed}
	s.State[e.Dest].Load++
	return nil
}

// HasLoad reports whether the Call-ID has a load entry in this set.
func (s *SetState) HasLoad(callID string) bool {
	_, ok := s.load.m[callID]
	return ok
}
