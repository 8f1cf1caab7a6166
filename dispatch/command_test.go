package dispatch

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

const cmdList = "1 sip:10.0.0.1 0 0 duid=a;weight=50\n1 sip:10.0.0.2 0 0 duid=b;maxload=3\n1 sip:10.0.0.3:5070;transport=tcp 8 0\n"

func newCmdSet(t testing.TB, seed uint64) *SetState {
	t.Helper()
	sets, err := ParseList(strings.NewReader(cmdList), "c.list")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.HashSize, cfg.HashInitExpire, cfg.HashExpire = 8, 60, 3600
	cfg.PingLatencyStats, cfg.ProbingMode, cfg.PingInterval = 1, 1, 10
	s, err := NewSetState(sets[0], &cfg, rand.New(rand.NewPCG(seed, 7)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustOp(t testing.TB, state string, direct bool) MarkOp {
	t.Helper()
	op, err := ParseMarkState(state)
	if err != nil {
		t.Fatal(err)
	}
	op.Direct = direct
	return op
}

func sampleCommands(t testing.TB) []Command {
	sets, err := ParseList(strings.NewReader(cmdList+"2 sips:gw.example.com 0 5 socket=udp:10.0.0.9:5060;x=yz\n"), "c.list")
	if err != nil {
		t.Fatal(err)
	}
	at := t0.UnixNano()
	return []Command{
		{Kind: CmdMark, At: at, Set: 1, DUID: "a", Op: mustOp(t, "ip", true)},
		{Kind: CmdMark, At: at, Set: 1, URI: "all", Op: mustOp(t, "t", false)},
		{Kind: CmdProbe, At: at + 1, Set: 1, URI: "sip:10.0.0.3:5070;transport=tcp", Probe: ProbeResult{Code: 200, RTT: 15 * time.Millisecond}},
		{Kind: CmdProbe, At: at + 2, Set: 1, DUID: "b", Probe: ProbeResult{Timeout: true}},
		{Kind: CmdLoadAdd, At: at, Set: 1, DUID: "b", CallID: "c1@host"},
		{Kind: CmdLoadConfirm, At: at, Set: 1, CallID: "c1@host"},
		{Kind: CmdLoadMove, At: at, Set: 1, DUID: "a", CallID: "c1@host"},
		{Kind: CmdLoadRemove, At: at, Set: -1, CallID: "c1@host"},
		{Kind: CmdLoadExpire, At: -at, Set: -1},
		{Kind: CmdReplaceSets, At: at, Dests: FlattenSets(sets)},
		{Kind: CmdAddDest, At: at, Dests: sets[0].Dests[:1]},
		{Kind: CmdRemoveDest, At: at, Set: 2, URI: "sips:gw.example.com"},
	}
}

func TestCommandRoundTrip(t *testing.T) {
	for _, c := range sampleCommands(t) {
		t.Run(c.Kind.String(), func(t *testing.T) {
			b, err := EncodeCommand(c)
			if err != nil {
				t.Fatal(err)
			}
			got, err := DecodeCommand(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, c)
			}
		})
	}
}

// A newer writer may append fields (to a command and to a destination); this
// decoder skips them.
func TestDecodeCommandSkipsAppendedFields(t *testing.T) {
	c := sampleCommands(t)[9]
	var buf bytes.Buffer
	buf.WriteByte(commandVersion)
	w := writer{e: msgpack.NewEncoder(&buf)}
	w.arrayLen(commandFields + 1)
	w.uint(uint64(c.Kind))
	w.int(c.At)
	w.int(int64(c.Set))
	for range 3 {
		w.str("")
	}
	w.uint(0)
	w.uint(0)
	w.bool(false)
	w.int(0)
	w.int(0)
	w.bool(false)
	w.arrayLen(1)
	// One destination with an extra trailing field.
	var db bytes.Buffer
	dw := writer{e: msgpack.NewEncoder(&db)}
	dw.dest(&c.Dests[0])
	raw := db.Bytes()
	raw[2]++ // array16 header (0xdc, 0, 20): one more field
	buf.Write(raw)
	w.str("future dest field")
	w.str("future command field")
	if w.err != nil {
		t.Fatal(w.err)
	}
	got, err := DecodeCommand(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Dests) != 1 || !reflect.DeepEqual(got.Dests[0], c.Dests[0]) {
		t.Fatalf("dest = %+v, want %+v", got.Dests, c.Dests[0])
	}
}

func TestDecodeCommandMalformed(t *testing.T) {
	good, err := EncodeCommand(sampleCommands(t)[9])
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"empty":          nil,
		"version 2":      append([]byte{2}, good[1:]...),
		"trailing":       append(append([]byte{}, good...), 0xc0),
		"not an array":   {commandVersion, 0x01},
		"huge array":     {commandVersion, 0xdd, 0xff, 0xff, 0xff, 0xff},
		"short array":    {commandVersion, 0x92, 0x01, 0x00},
		"kind 0":         mustEncodeKind(t, 0),
		"kind too large": mustEncodeKind(t, 99),
	}
	for n := 1; n < len(good); n += 7 {
		cases[fmt.Sprintf("truncated at %d", n)] = good[:n]
	}
	for name, b := range cases {
		if _, err := DecodeCommand(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: err = %v, want ErrMalformed", name, err)
		}
	}
}

func mustEncodeKind(t *testing.T, k CommandKind) []byte {
	b, err := EncodeCommand(Command{Kind: k, Set: 1})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range sampleCommands(f) {
		b, err := EncodeCommand(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{commandVersion, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeCommand(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		// What decodes re-encodes to something that decodes the same.
		b2, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := DecodeCommand(b2)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("re-decode: %v\n%+v\n%+v", err, c, c2)
		}
	})
}

// Apply and the direct methods it stands for leave identical state and events.
func TestApplyMatchesDirect(t *testing.T) {
	at := t0.Add(time.Second)
	type step struct {
		c      Command
		direct func(s *SetState) []Event
	}
	one := func(ev Event, ok bool) []Event {
		if ok {
			return []Event{ev}
		}
		return nil
	}
	steps := []step{
		{Command{Kind: CmdMark, Set: 1, DUID: "b", Op: mustOp(t, "ip", true)},
			func(s *SetState) []Event { return one(s.Mark(s.FindDUID("b"), mustOp(t, "ip", true), at)) }},
		{Command{Kind: CmdProbe, Set: 1, DUID: "b", Probe: ProbeResult{Code: 200, RTT: 9 * time.Millisecond}},
			func(s *SetState) []Event {
				return one(s.Probe(s.FindDUID("b"), ProbeResult{Code: 200, RTT: 9 * time.Millisecond}, at))
			}},
		{Command{Kind: CmdMark, Set: 1, URI: "all", Op: mustOp(t, "t", false)},
			func(s *SetState) []Event {
				var evs []Event
				for i := range s.Dests {
					evs = append(evs, one(s.Mark(i, mustOp(t, "t", false), at))...)
				}
				return evs
			}},
		{Command{Kind: CmdLoadAdd, Set: 1, URI: "sip:10.0.0.3:5070;transport=tcp", CallID: "x"},
			func(s *SetState) []Event {
				if err := s.LoadAdd("x", s.Find("sip:10.0.0.3:5070;transport=tcp"), at); err != nil {
					t.Fatal(err)
				}
				return nil
			}},
		{Command{Kind: CmdLoadConfirm, Set: 1, CallID: "x"}, func(s *SetState) []Event { s.LoadConfirm("x", at); return nil }},
		{Command{Kind: CmdLoadMove, Set: 1, DUID: "a", CallID: "x"}, func(s *SetState) []Event { s.LoadMove("x", s.FindDUID("a")); return nil }},
		{Command{Kind: CmdLoadAdd, Set: 1, DUID: "b", CallID: "y"},
			func(s *SetState) []Event {
				if err := s.LoadAdd("y", s.FindDUID("b"), at); err != nil {
					t.Fatal(err)
				}
				return nil
			}},
		{Command{Kind: CmdLoadRemove, Set: -1, CallID: "x"}, func(s *SetState) []Event { s.LoadRemove("x"); return nil }},
		{Command{Kind: CmdLoadExpire, Set: 1, At: at.Add(2 * time.Minute).UnixNano()},
			func(s *SetState) []Event { s.LoadExpire(at.Add(2 * time.Minute)); return nil }},
	}
	viaCmd, direct := newCmdSet(t, 1), newCmdSet(t, 1)
	for k, st := range steps {
		if st.c.At == 0 {
			st.c.At = at.UnixNano()
		}
		res, err := viaCmd.Apply(st.c)
		if err != nil {
			t.Fatalf("step %d %s: %v", k, st.c.Kind, err)
		}
		want := st.direct(direct)
		direct.tick(st.c.At) // the log clock is Apply's alone
		if !reflect.DeepEqual(res.Events, want) {
			t.Fatalf("step %d %s: events %+v, want %+v", k, st.c.Kind, res.Events, want)
		}
		a, b := mustMarshal(t, viaCmd), mustMarshal(t, direct)
		if !bytes.Equal(a, b) {
			t.Fatalf("step %d %s: state differs from the direct path", k, st.c.Kind)
		}
	}
	if viaCmd.LoadCount() != 0 {
		t.Fatalf("after remove and expiry: %d entries left", viaCmd.LoadCount())
	}
}

func mustMarshal(t testing.TB, s *SetState) []byte {
	t.Helper()
	b, err := s.MarshalState()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestApplyResults(t *testing.T) {
	s := newCmdSet(t, 1)
	at := t0.UnixNano()
	res, err := s.Apply(Command{Kind: CmdMark, At: at, Set: 1, DUID: "a", Op: mustOp(t, "i", true)})
	if err != nil || len(res.Events) != 1 || res.Events[0].Up || res.Events[0].DUID != "a" || !res.Events[0].At.Equal(t0) {
		t.Fatalf("mark inactive: %+v, %v; want one dst-down for a at t0", res, err)
	}
	if _, err := s.Apply(Command{Kind: CmdLoadAdd, At: at, Set: 1, DUID: "b", CallID: "c"}); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.Apply(Command{Kind: CmdLoadConfirm, At: at, Set: 1, CallID: "nope"}); res.Found {
		t.Error("confirm of an unknown Call-ID reported found")
	}
	if res, _ := s.Apply(Command{Kind: CmdLoadRemove, At: at, Set: -1, CallID: "c"}); !res.Found {
		t.Error("remove of a known Call-ID reported not found")
	}
	// Expiry counts from the command's At: unconfirmed entries live 60 s.
	if _, err := s.Apply(Command{Kind: CmdLoadAdd, At: at, Set: 1, DUID: "b", CallID: "d"}); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.Apply(Command{Kind: CmdLoadExpire, At: at + int64(59*time.Second), Set: -1}); res.Expired != 0 {
		t.Errorf("expired %d at 59 s", res.Expired)
	}
	if res, _ := s.Apply(Command{Kind: CmdLoadExpire, At: at + int64(61*time.Second), Set: -1}); res.Expired != 1 {
		t.Errorf("expired %d at 61 s, want 1", res.Expired)
	}
}

// A failing command changes nothing.
func TestApplyErrors(t *testing.T) {
	at := t0.UnixNano()
	cases := []struct {
		c    Command
		want error
	}{
		{Command{Kind: CmdMark, At: at, Set: 2, DUID: "a"}, ErrBadCommand},
		{Command{Kind: CmdMark, At: at, Set: -1, DUID: "a"}, ErrBadCommand},
		{Command{Kind: CmdMark, At: at, Set: 1, DUID: "zz"}, ErrUnknownDestination},
		{Command{Kind: CmdProbe, At: at, Set: 1, URI: "sip:10.9.9.9"}, ErrUnknownDestination},
		{Command{Kind: CmdLoadAdd, At: at, Set: 1, DUID: "zz", CallID: "q"}, ErrUnknownDestination},
		{Command{Kind: CmdLoadAdd, At: at, Set: 1, DUID: "a", CallID: "dup"}, ErrLoadExists},
		{Command{Kind: CmdLoadMove, At: at, Set: 1, URI: "sip:nowhere", CallID: "dup"}, ErrUnknownDestination},
		{Command{Kind: CmdReplaceSets, At: at, Set: 1}, ErrBadCommand},
		{Command{Kind: CmdAddDest, At: at, Set: 1}, ErrBadCommand},
		{Command{Kind: CmdRemoveDest, At: at, Set: 1, URI: "sip:10.0.0.3"}, ErrBadCommand},
		{Command{Kind: 42, At: at, Set: 1}, ErrBadCommand},
	}
	s := newCmdSet(t, 1)
	if _, err := s.Apply(Command{Kind: CmdLoadAdd, At: at, Set: 1, DUID: "a", CallID: "dup"}); err != nil {
		t.Fatal(err)
	}
	before := mustMarshal(t, s)
	for _, tc := range cases {
		if _, err := s.Apply(tc.c); !errors.Is(err, tc.want) {
			t.Errorf("%s set %d: err %v, want %v", tc.c.Kind, tc.c.Set, err, tc.want)
		}
		if !bytes.Equal(before, mustMarshal(t, s)) {
			t.Fatalf("%s: failed command changed the state", tc.c.Kind)
		}
	}
}

// Addressing by duid survives a reload that moves the destination.
func TestCommandAddressesByDUIDAcrossReload(t *testing.T) {
	s := newCmdSet(t, 1)
	sets, err := ParseList(strings.NewReader("1 sip:10.0.0.7 0 0 duid=b\n1 sip:10.0.0.1 0 0 duid=a;weight=50\n"), "r.list")
	if err != nil {
		t.Fatal(err)
	}
	next, err := NewSetState(sets[0], s.Config(), rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	next.CarryOver(s)
	if _, err := next.Apply(Command{Kind: CmdMark, At: t0.UnixNano(), Set: 1, DUID: "b", Op: mustOp(t, "d", true)}); err != nil {
		t.Fatal(err)
	}
	if f := next.State[next.FindDUID("b")].Flags; f&FlagDisabled == 0 {
		t.Fatalf("b after reload and mark: %s, want disabled", f.Letters())
	}
}

// randomLog builds a reproducible mix of every set command.
func randomLog(t testing.TB, rng *rand.Rand, n int) []Command {
	keys := []struct{ duid, uri string }{{"a", ""}, {"b", ""}, {"", "sip:10.0.0.3:5070;transport=tcp"}}
	states := []string{"a", "i", "t", "ip", "d", "ap"}
	at := t0.UnixNano()
	log := make([]Command, 0, n)
	for range n {
		at += int64(rng.IntN(5000)) * int64(time.Millisecond)
		k := keys[rng.IntN(len(keys))]
		c := Command{At: at, Set: 1, DUID: k.duid, URI: k.uri, CallID: fmt.Sprintf("call-%d", rng.IntN(40))}
		switch rng.IntN(8) {
		case 0:
			c.Kind, c.Op = CmdMark, mustOp(t, states[rng.IntN(len(states))], rng.IntN(2) == 0)
		case 1, 2:
			c.Kind = CmdProbe
			c.Probe = ProbeResult{Code: []int{200, 503, 404}[rng.IntN(3)], RTT: time.Duration(rng.IntN(80)) * time.Millisecond, Timeout: rng.IntN(4) == 0}
		case 3, 4:
			c.Kind = CmdLoadAdd
		case 5:
			c.Kind = CmdLoadConfirm
		case 6:
			c.Kind = CmdLoadMove
		default:
			c.Kind, c.Set = CmdLoadRemove, -1
		}
		if rng.IntN(25) == 0 {
			c = Command{Kind: CmdLoadExpire, At: at, Set: -1}
		}
		log = append(log, c)
	}
	return log
}

// Two fresh sets with different random sources, fed the same log through the
// wire format, encode to the same bytes after every command; a snapshot of
// either restores to the same bytes too.
func TestReplayIsDeterministic(t *testing.T) {
	log := randomLog(t, rand.New(rand.NewPCG(42, 42)), 600)
	a, b := newCmdSet(t, 1), newCmdSet(t, 99)
	applied := 0
	for k, c := range log {
		enc, err := EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		dc, err := DecodeCommand(enc)
		if err != nil {
			t.Fatal(err)
		}
		ra, ea := a.Apply(c)
		rb, eb := b.Apply(dc)
		if (ea == nil) != (eb == nil) || !reflect.DeepEqual(ra, rb) {
			t.Fatalf("command %d %s: results differ: %+v %v / %+v %v", k, c.Kind, ra, ea, rb, eb)
		}
		if ea == nil {
			applied++
		}
		if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, b)) {
			t.Fatalf("command %d %s: states differ", k, c.Kind)
		}
	}
	if applied < len(log)/2 || a.LoadCount() == 0 {
		t.Fatalf("log too weak: %d of %d applied, %d calls left", applied, len(log), a.LoadCount())
	}
	snap := mustMarshal(t, a)
	r, err := RestoreSetState(snap, a.Config(), rand.New(rand.NewPCG(5, 5)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustMarshal(t, r), snap) {
		t.Fatal("restored state encodes differently")
	}
	// The restored set keeps going like the original.
	more := randomLog(t, rand.New(rand.NewPCG(7, 7)), 100)
	for _, c := range more {
		c.At += int64(time.Hour)
		_, ea := a.Apply(c)
		_, er := r.Apply(c)
		if (ea == nil) != (er == nil) {
			t.Fatalf("%s: %v / %v", c.Kind, ea, er)
		}
	}
	if !bytes.Equal(mustMarshal(t, a), mustMarshal(t, r)) {
		t.Fatal("restored set diverged after more commands")
	}
}

func TestFlattenSetsRebuilds(t *testing.T) {
	for _, list := range []string{
		"3 sip:a 0 0\n1 sip:b 0 5\n3 sip:c 0 9\n1 sip:d 0 5\n2 sip:e 0 0\n1 sip:f 0 1\n3 sip:g 0 0\n",
		// Sets in an order whose post-order walk, inserted as is, builds
		// another tree: Kamailio lists them 1 2 4 6 7 5 3.
		"1 sip:a\n7 sip:b\n5 sip:c\n3 sip:d\n2 sip:e\n4 sip:f\n6 sip:g\n",
		"7 sip:a\n6 sip:b\n5 sip:c\n4 sip:d\n3 sip:e\n2 sip:f\n1 sip:g\n",
		"15 sip:a\n3 sip:b\n12 sip:c\n7 sip:d\n1 sip:e\n9 sip:f\n14 sip:g\n2 sip:h\n11 sip:i\n5 sip:j\n13 sip:k\n8 sip:l\n10 sip:m\n4 sip:n\n6 sip:o\n",
	} {
		sets, err := ParseList(strings.NewReader(list), "f.list")
		if err != nil {
			t.Fatal(err)
		}
		if got := BuildSets(FlattenSets(sets)); !reflect.DeepEqual(got, sets) {
			t.Errorf("BuildSets(FlattenSets(sets)) = %+v\nwant %+v", got, sets)
		}
	}
}

// TestRebuildOrderRandom: for random insertion orders, the level order of the
// tree rebuilds it exactly.
func TestRebuildOrderRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 40; n++ {
		for try := 0; try < 50; try++ {
			var tr setTree
			for _, id := range rng.Perm(n) {
				tr.insert(id * 3)
			}
			var post []int
			tr.postOrder(func(id int) { post = append(post, id) })
			var again setTree
			for _, id := range rebuildOrder(post) {
				again.insert(id)
			}
			var got []int
			again.postOrder(func(id int) { got = append(got, id) })
			if !slices.Equal(got, post) {
				t.Fatalf("post-order %v rebuilt as %v", post, got)
			}
		}
	}
}

// The commands of a call's life travel once per call through raft.
func BenchmarkCommandCodec(b *testing.B) {
	c := Command{Kind: CmdLoadAdd, At: t0.UnixNano(), Set: 1, DUID: "gw-frankfurt-1", CallID: "a84b4c76e66710@pc33.atlanta.com"}
	enc, err := EncodeCommand(c)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		enc, _ := EncodeCommand(c)
		if _, err := DecodeCommand(enc); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(enc)), "bytes/cmd")
}

// Snapshotting a set with many calls: the FSM's snapshot cost per call.
func BenchmarkMarshalState(b *testing.B) {
	s := newCmdSet(b, 1)
	for i := range 10000 {
		if _, err := s.Apply(Command{Kind: CmdLoadAdd, At: t0.UnixNano(), Set: 1, DUID: "a", CallID: fmt.Sprint("call-", i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.MarshalState(); err != nil {
			b.Fatal(err)
		}
	}
}
