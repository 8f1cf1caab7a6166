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
)

// maxLoadHint caps the initial size of a set's table: ds_hash_size may ask for
// 2^24 slots, which would preallocate hundreds of MB for every set.
const maxLoadHint = 1 << 16

// LoadTable is the call-load table of one set (algorithm 10): Call-ID →
// destination, state and expiry. It is Kamailio's ds_ht, kept per set so that
// one set's owner drives it alone.
type LoadTable struct {
	m map[string]loadEntry
}

// loadEntry is kept small (16 bytes) for tables of a million calls.
type loadEntry struct {
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
	Expires   time.Time // removed by LoadExpire after this instant
}

func newLoadTable(hashSize int) LoadTable {
	hint := 0
	if hashSize > 0 {
		hint = min(1<<hashSize, maxLoadHint)
	}
	return LoadTable{m: make(map[string]loadEntry, hint)}
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
	s.load.m[strings.Clone(callID)] = loadEntry{expires: exp.UnixNano(), dest: int32(i)}
	s.State[i].Load++
	return nil
}

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
	s.load.m[strings.Clone(e.CallID)] = loadEntry{expires: e.Expires.UnixNano(), dest: int32(e.Dest), confirmed: e.Confirmed}
	s.State[e.Dest].Load++
	return nil
}

// HasLoad reports whether the Call-ID has a load entry in this set.
func (s *SetState) HasLoad(callID string) bool {
	_, ok := s.load.m[callID]
	return ok
}
