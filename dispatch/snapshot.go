package dispatch

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Snapshot encoding of one set: a version byte, then
//
//	[id, [dest, ...], [[flags, failures, successes, load, latency], ...],
//	 [[callID, destIndex, confirmed, expires(ns), since(ns)], ...],
//	 clock(ns), [[callID, at(ns)], ...]]
//
// with destinations as in a command and latency as [count, timeouts, avg,
// m2, std, est, max, min]. It holds what replication keeps identical on every
// node: the destinations, each one's flags, counters, load and latency, and
// the call-load entries sorted by Call-ID. A load entry names its destination
// by index into the snapshot's own destination list, which is unambiguous
// even where two destinations share a key. The log clock and the tombstones
// of ended calls (sorted by Call-ID) follow; snapshots written before they
// existed end after the entries, and entries without since restore with
// since 0. Selection cursors and weight
// tables are local to a node and left out; RestoreSetState rebuilds them.
const (
	setSnapFields   = 6
	setSnapFieldsV0 = 4 // before the clock and the tombstones
	destStateFields = 5
	latencyFields   = 8
	loadFields      = 5
	loadFieldsV0    = 4 // before since
)

// MarshalState encodes the set's replicated state. Two SetStates that applied
// the same commands to the same start encode to the same bytes.
func (s *SetState) MarshalState() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(snapshotVersion)
	w := writer{e: msgpack.NewEncoder(&buf)}
	w.arrayLen(setSnapFields)
	w.int(int64(s.ID))
	w.arrayLen(len(s.Dests))
	for i := range s.Dests {
		w.dest(&s.Dests[i])
	}
	w.arrayLen(len(s.State))
	for i := range s.State {
		st := &s.State[i]
		w.arrayLen(destStateFields)
		w.uint(uint64(st.Flags))
		w.int(int64(st.Failures))
		w.int(int64(st.Successes))
		w.int(int64(st.Load))
		l := &st.Latency
		w.arrayLen(latencyFields)
		w.int(l.Count)
		w.int(l.Timeouts)
		for _, f := range [...]float64{l.Avg, l.M2, l.Std, l.Est, l.Max, l.Min} {
			w.float(f)
		}
	}
	entries := s.LoadEntries(nil)
	w.arrayLen(len(entries))
	for _, e := range entries {
		w.arrayLen(loadFields)
		w.str(e.CallID)
		w.int(int64(e.Dest))
		w.bool(e.Confirmed)
		w.int(e.Expires.UnixNano())
		w.int(e.Since.UnixNano())
	}
	w.int(s.load.clock)
	ended := make([]string, 0, len(s.load.ended))
	for id := range s.load.ended {
		ended = append(ended, id)
	}
	slices.Sort(ended)
	w.arrayLen(len(ended))
	for _, id := range ended {
		w.arrayLen(2)
		w.str(id)
		w.int(s.load.ended[id])
	}
	if w.err != nil {
		return nil, fmt.Errorf("snapshot set %d: %w", s.ID, w.err)
	}
	return buf.Bytes(), nil
}

// RestoreSetState builds a SetState from MarshalState's bytes under cfg and
// rng, as NewSetState would, then sets every destination's state and call
// load as encoded. Malformed or inconsistent input (a load entry on a missing
// destination, loads that disagree with the entries) is an error wrapping
// ErrMalformed.
func RestoreSetState(b []byte, cfg *Config, rng *rand.Rand) (*SetState, error) {
	if len(b) == 0 || b[0] != snapshotVersion {
		return nil, fmt.Errorf("restore set: %w: unknown version", ErrMalformed)
	}
	r := newReader(b[1:])
	n := r.arrayLen()
	if r.err == nil && n < setSnapFieldsV0 {
		r.fail("%d fields, want %d", n, setSnapFieldsV0)
	}
	set := Set{ID: int(r.intRange(-maxInt32-1, maxInt32))}
	if nd := r.arrayLen(); nd > 0 {
		set.Dests = make([]Destination, nd)
		for i := range set.Dests {
			r.dest(&set.Dests[i])
		}
	}
	ns := r.arrayLen()
	if r.err == nil && ns != len(set.Dests) {
		r.fail("%d states for %d destinations", ns, len(set.Dests))
	}
	states := make([]DestState, ns)
	for i := range states {
		st := &states[i]
		k := r.arrayLen()
		st.Flags = Flags(r.uintN(1<<32 - 1))
		st.Failures = int(r.intRange(0, maxInt32))
		st.Successes = int(r.intRange(0, maxInt32))
		st.Load = int(r.intRange(0, maxInt32))
		lk := r.arrayLen()
		l := &st.Latency
		l.Count, l.Timeouts = r.int(), r.int()
		for _, f := range [...]*float64{&l.Avg, &l.M2, &l.Std, &l.Est, &l.Max, &l.Min} {
			*f = r.float()
		}
		r.skipExtra(lk, latencyFields)
		r.skipExtra(k, destStateFields)
	}
	nl := r.arrayLen()
	entries := make([]LoadEntry, nl)
	for i := range entries {
		k := r.arrayLen()
		entries[i] = LoadEntry{CallID: r.str(), Dest: int(r.intRange(0, maxInt32)), Confirmed: r.bool(), Expires: time.Unix(0, r.int())}
		known := loadFieldsV0
		if k >= loadFields {
			entries[i].Since, known = time.Unix(0, r.int()), loadFields
		}
		r.skipExtra(k, known)
	}
	var clock int64
	var ended map[string]int64
	known := setSnapFieldsV0
	if n >= setSnapFields {
		known = setSnapFields
		clock = r.int()
		ne := r.arrayLen()
		ended = make(map[string]int64, ne)
		for range ne {
			k := r.arrayLen()
			id, at := r.str(), r.int()
			r.skipExtra(k, 2)
			ended[id] = at
		}
	}
	r.skipExtra(n, known)
	if r.err == nil && r.r.Len() != 0 {
		r.fail("%d trailing bytes", r.r.Len())
	}
	if r.err != nil {
		return nil, fmt.Errorf("restore set: %w", r.err)
	}
	s, err := NewSetState(set, cfg, rng)
	if err != nil {
		return nil, fmt.Errorf("restore set %d: %w", set.ID, err)
	}
	for i := range states {
		s.State[i] = states[i]
		s.State[i].Load = 0 // LoadRestore counts the entries
	}
	s.load.clock = clock
	for id, at := range ended {
		s.load.ended[id] = at
	}
	for _, e := range entries {
		if err := s.LoadRestore(e); err != nil {
			return nil, fmt.Errorf("restore set %d: %w: %w", set.ID, ErrMalformed, err)
		}
	}
	for i := range states {
		if s.State[i].Load != states[i].Load {
			return nil, fmt.Errorf("restore set %d: %w: destination %d has load %d but %d entries",
				set.ID, ErrMalformed, i, states[i].Load, s.State[i].Load)
		}
	}
	s.stateChanged()
	return s, nil
}

// EncodeSnapshot joins MarshalState outputs of several sets into one
// snapshot: a version byte, then a msgpack array of byte strings. The caller
// orders the sets (by id) so that equal states give equal bytes.
func EncodeSnapshot(sets [][]byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(snapshotVersion)
	e := msgpack.NewEncoder(&buf)
	w := writer{e: e}
	w.arrayLen(len(sets))
	for _, b := range sets {
		if w.err == nil {
			w.err = e.EncodeBytes(b)
		}
	}
	if w.err != nil {
		return nil, fmt.Errorf("encode snapshot: %w", w.err)
	}
	return buf.Bytes(), nil
}

// DecodeSnapshot splits what EncodeSnapshot wrote into the sets' encodings,
// for RestoreSetState. The parts alias b. Malformed input is an error
// wrapping ErrMalformed.
func DecodeSnapshot(b []byte) ([][]byte, error) {
	if len(b) == 0 || b[0] != snapshotVersion {
		return nil, fmt.Errorf("decode snapshot: %w: unknown version", ErrMalformed)
	}
	r := newReader(b[1:])
	n := r.arrayLen()
	out := make([][]byte, 0, n)
	for range n {
		if r.err != nil {
			break
		}
		// Read the length, check it against what is left, then slice b:
		// msgpack's DecodeBytes would allocate whatever length is declared.
		l, err := r.d.DecodeBytesLen()
		r.wrap(err)
		if r.err == nil && (l < 0 || l > r.r.Len()) {
			r.fail("byte string of %d with %d bytes left", l, r.r.Len())
		}
		if r.err != nil {
			break
		}
		start := len(b) - r.r.Len()
		out = append(out, b[start:start+l])
		if _, err := r.r.Seek(int64(l), io.SeekCurrent); err != nil {
			r.wrap(err)
		}
	}
	if r.err == nil && r.r.Len() != 0 {
		r.fail("%d trailing bytes", r.r.Len())
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode snapshot: %w", r.err)
	}
	return out, nil
}
