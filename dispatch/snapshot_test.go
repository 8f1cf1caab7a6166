package dispatch

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

func TestSnapshotRoundTripSelects(t *testing.T) {
	s := newCmdSet(t, 1)
	at := t0.UnixNano()
	for i, d := range []string{"a", "a", "b"} {
		if _, err := s.Apply(Command{Kind: CmdLoadAdd, At: at, Set: 1, DUID: d, CallID: fmt.Sprint("c", i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Apply(Command{Kind: CmdLoadConfirm, At: at + 5, Set: 1, CallID: "c0"})
	s.Apply(Command{Kind: CmdMark, At: at, Set: 1, URI: "sip:10.0.0.3:5070;transport=tcp", Op: mustOp(t, "ip", true)})
	s.Apply(Command{Kind: CmdProbe, At: at, Set: 1, DUID: "a", Probe: ProbeResult{Code: 200, RTT: 20 * time.Millisecond}})
	r, err := RestoreSetState(mustMarshal(t, s), s.Config(), rand.New(rand.NewPCG(3, 3)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.State, s.State) || !reflect.DeepEqual(r.Dests, s.Dests) {
		t.Fatalf("restored state\n%+v\nwant\n%+v", r.State, s.State)
	}
	if !reflect.DeepEqual(r.LoadEntries(nil), s.LoadEntries(nil)) {
		t.Fatal("restored load entries differ")
	}
	// Least-loaded now avoids a (2 calls) and the inactive third: b.
	sel, err := r.Select(&Request{Method: "INVITE", CallID: "new"}, AlgCallLoad, 0, t0, nil)
	if err != nil || r.Dests[sel.Order[0]].Attrs.DUID != "b" {
		t.Fatalf("select after restore: %v %v, want b", sel.Order, err)
	}
}

func TestRestoreMalformed(t *testing.T) {
	s := newCmdSet(t, 1)
	if _, err := s.Apply(Command{Kind: CmdLoadAdd, At: t0.UnixNano(), Set: 1, DUID: "a", CallID: "c"}); err != nil {
		t.Fatal(err)
	}
	good := mustMarshal(t, s)
	cases := map[string][]byte{"empty": nil, "version": append([]byte{9}, good[1:]...), "trailing": append(append([]byte{}, good...), 1)}
	for n := 1; n < len(good); n += 5 {
		cases[fmt.Sprintf("truncated at %d", n)] = good[:n]
	}
	// The load count of a is encoded as 1; make it 2 without a second entry.
	s.State[s.FindDUID("a")].Load = 2
	cases["load disagrees"] = mustMarshal(t, s)
	for name, b := range cases {
		if _, err := RestoreSetState(b, s.Config(), rand.New(rand.NewPCG(1, 1))); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err %v, want ErrMalformed", name, err)
		}
	}
}

func TestSnapshotContainer(t *testing.T) {
	parts := [][]byte{[]byte("one"), {}, bytes.Repeat([]byte{0xc1}, 300)}
	b, err := EncodeSnapshot(parts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSnapshot(b)
	if err != nil || len(got) != 3 || !bytes.Equal(got[0], parts[0]) || len(got[1]) != 0 || !bytes.Equal(got[2], parts[2]) {
		t.Fatalf("round trip: %q, %v", got, err)
	}
	bad := map[string][]byte{
		"empty":       nil,
		"version":     {7, 0x90},
		"huge string": {snapshotVersion, 0x91, 0xc6, 0xff, 0xff, 0xff, 0xff, 1},
		"trailing":    append(append([]byte{}, b...), 0),
	}
	for n := 1; n < len(b); n += 11 {
		bad[fmt.Sprint("truncated at ", n)] = b[:n]
	}
	for name, in := range bad {
		if _, err := DecodeSnapshot(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}
