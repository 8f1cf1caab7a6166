package dispatch

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"
)

// The replicated call-load rules: a removal that finds no entry leaves a
// tombstone that refuses an older add; an add applied later than
// LateAddWindow is refused; tombstones are pruned by the expiry sweep.
func TestLoadCommandRules(t *testing.T) {
	at := func(d time.Duration) int64 { return t0.Add(d).UnixNano() }
	add := func(id string, when time.Duration) Command {
		return Command{Kind: CmdLoadAdd, At: at(when), Set: 1, DUID: "b", CallID: id}
	}
	remove := func(set int, id string, when time.Duration) Command {
		return Command{Kind: CmdLoadRemove, At: at(when), Set: set, CallID: id}
	}
	expire := func(when time.Duration) Command { return Command{Kind: CmdLoadExpire, At: at(when), Set: -1} }
	type step struct {
		c       Command
		refused bool // want ErrLoadRefused
		found   bool
	}
	cases := []struct {
		name    string
		steps   []step
		entries int
		ended   int
	}{
		{"add then remove", []step{{c: add("x", 0), found: true}, {c: remove(1, "x", time.Second), found: true}}, 0, 0},
		{"remove overtakes its add", []step{{c: remove(1, "x", time.Second)}, {c: add("x", 0), refused: true}}, 0, 1},
		{"a new INVITE after the removal is a new call", []step{{c: remove(1, "x", time.Second)}, {c: add("x", 2*time.Second), found: true}}, 1, 1},
		{"removal for any set leaves no tombstone", []step{{c: remove(-1, "x", time.Second)}, {c: add("x", 0), found: true}}, 1, 0},
		{"late add refused", []step{{c: expire(LateAddWindow + time.Second)}, {c: add("x", 0), refused: true}}, 0, 0},
		{"add at the edge of the window", []step{{c: expire(LateAddWindow)}, {c: add("x", 0), found: true}}, 1, 0},
		{"tombstones pruned after the window", []step{{c: remove(1, "x", 0)}, {c: remove(1, "y", 20*time.Second)},
			{c: expire(LateAddWindow + time.Second)}}, 0, 1},
		{"second removal keeps the later time", []step{{c: remove(1, "x", 5*time.Second)}, {c: remove(1, "x", time.Second)},
			{c: add("x", 3*time.Second), refused: true}}, 0, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newCmdSet(t, 1)
			for k, st := range tc.steps {
				res, err := s.Apply(st.c)
				if got := errors.Is(err, ErrLoadRefused); got != st.refused {
					t.Fatalf("step %d %s: err %v, want refused=%v", k, st.c.Kind, err, st.refused)
				}
				if err != nil && !st.refused {
					t.Fatalf("step %d %s: %v", k, st.c.Kind, err)
				}
				if st.c.Kind != CmdLoadExpire && res.Found != st.found {
					t.Fatalf("step %d %s: found %v, want %v", k, st.c.Kind, res.Found, st.found)
				}
			}
			if s.LoadCount() != tc.entries || s.EndedCount() != tc.ended {
				t.Fatalf("%d entries and %d tombstones, want %d and %d", s.LoadCount(), s.EndedCount(), tc.entries, tc.ended)
			}
			var load int
			for i := range s.State {
				load += s.State[i].Load
			}
			if load != tc.entries {
				t.Fatalf("destination loads sum to %d for %d entries", load, tc.entries)
			}
		})
	}
}

// The clock, the tombstones and each entry's start survive a snapshot, and a
// snapshot written before they existed still restores.
func TestSnapshotKeepsClockAndTombstones(t *testing.T) {
	s := newCmdSet(t, 1)
	for _, c := range []Command{
		{Kind: CmdLoadAdd, At: t0.UnixNano(), Set: 1, DUID: "b", CallID: "live"},
		{Kind: CmdLoadRemove, At: t0.Add(time.Second).UnixNano(), Set: 1, CallID: "gone"},
	} {
		if _, err := s.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	b := mustMarshal(t, s)
	r, err := RestoreSetState(b, s.cfg, rand.New(rand.NewPCG(9, 9)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustMarshal(t, r), b) {
		t.Fatal("restored state encodes differently")
	}
	if e := r.LoadEntries(nil); len(e) != 1 || !e[0].Since.Equal(t0) {
		t.Fatalf("entries %+v, want live since t0", e)
	}
	if _, err := r.Apply(Command{Kind: CmdLoadAdd, At: t0.UnixNano(), Set: 1, DUID: "b", CallID: "gone"}); !errors.Is(err, ErrLoadRefused) {
		t.Fatalf("add of an ended call after restore: %v, want refused", err)
	}

	// A snapshot written by the version before the clock and tombstones
	// (4ef7383): one confirmed entry "live" on b.
	v0, err := os.ReadFile("testdata/snapshot-v0.bin")
	if err != nil {
		t.Fatal(err)
	}
	old, err := RestoreSetState(v0, s.cfg, rand.New(rand.NewPCG(9, 9)))
	if err != nil {
		t.Fatalf("old snapshot: %v", err)
	}
	if e := old.LoadEntries(nil); len(e) != 1 || e[0].CallID != "live" || !e[0].Confirmed || old.EndedCount() != 0 {
		t.Fatalf("old snapshot: entries %+v, %d tombstones", e, old.EndedCount())
	}
}

// Calls held on a destination count toward algorithm 10's least-loaded pick
// and maxload without touching the state.
func TestSelectHeld(t *testing.T) {
	s := newCmdSet(t, 1)
	req := &Request{Method: "INVITE", CallID: "c"}
	free, err := s.Select(req, AlgCallLoad, 0, t0, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := free.Order[0]
	held := make([]int, len(s.Dests))
	held[first] = 1
	sel, err := s.SelectHeld(req, AlgCallLoad, 0, t0, nil, held)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Order[0] == first {
		t.Fatalf("picked %d again with a call held on it", first)
	}
	if s.State[first].Load != 0 {
		t.Fatalf("held call leaked into the state: load %d", s.State[first].Load)
	}
}
