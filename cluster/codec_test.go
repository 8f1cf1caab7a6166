package cluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func TestEntryRoundTrip(t *testing.T) {
	for _, cmds := range [][]command{
		{},
		{{Origin: 1, Seq: 2, Cmd: []byte("hello")}},
		{{Cmd: []byte{}}, {Origin: ^uint64(0), Seq: 7, Cmd: bytes.Repeat([]byte{0xff}, 70000)}},
	} {
		b, err := encodeEntry(cmds)
		if err != nil {
			t.Fatal(err)
		}
		got, err := decodeEntry(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(cmds) {
			t.Fatalf("%d commands, want %d", len(got), len(cmds))
		}
		for i := range cmds {
			if got[i].Origin != cmds[i].Origin || got[i].Seq != cmds[i].Seq || !bytes.Equal(got[i].Cmd, cmds[i].Cmd) {
				t.Fatalf("command %d: %+v, want %+v", i, got[i], cmds[i])
			}
		}
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	good, _ := encodeEntry([]command{{Origin: 1, Seq: 1, Cmd: []byte("x")}})
	for name, b := range map[string][]byte{
		"empty":        nil,
		"version":      append([]byte{99}, good[1:]...),
		"truncated":    good[:len(good)-1],
		"trailing":     append(append([]byte{}, good...), 0),
		"huge array":   {entryV1, 0xdd, 0xff, 0xff, 0xff, 0xff},
		"not an array": {entryV1, 0xa1, 'x'},
		"short cmd":    {entryV1, 0x91, 0x92, 0x01, 0x01},
	} {
		if _, err := decodeEntry(b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: got %v, want errMalformed", name, err)
		}
	}
}

func TestGossipAndMetaRoundTrip(t *testing.T) {
	m := gossipMsg{From: "n1", Name: "gw", Payload: []byte{1, 2}}
	b, err := encodeGossip(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeGossip(b)
	if err != nil || !reflect.DeepEqual(got, m) {
		t.Fatalf("gossip: %+v, %v", got, err)
	}
	meta := nodeMeta{ID: "n1", RaftAddr: "127.0.0.1:8300", Expect: 3}
	b, err = encodeMeta(meta)
	if err != nil {
		t.Fatal(err)
	}
	gm, err := decodeMeta(b)
	if err != nil || gm != meta {
		t.Fatalf("meta: %+v, %v", gm, err)
	}
	if _, err := decodeMeta(b[:len(b)-2]); !errors.Is(err, errMalformed) {
		t.Fatalf("truncated meta: %v", err)
	}
	if _, err := decodeGossip(nil); !errors.Is(err, errMalformed) {
		t.Fatalf("empty gossip: %v", err)
	}
}

func newTestFSM(app Applier) *fsm {
	return newFSM(app, "t", 5, newWaiters(), &counters{}, slog.New(slog.DiscardHandler))
}

// The FSM splits a batch in order, hands results only to this process's
// waiters, skips configuration entries and counts malformed entries.
func TestFSMApply(t *testing.T) {
	app := newTestApp()
	f := newTestFSM(app)
	ch := f.waiters.register(2)
	data, _ := encodeEntry([]command{
		{Origin: 5, Seq: 1, Cmd: []byte("a")}, // nobody waits for seq 1
		{Origin: 5, Seq: 2, Cmd: []byte("a")},
		{Origin: 6, Seq: 2, Cmd: []byte("a")}, // another process's seq 2
	})
	res := f.ApplyBatch([]*raft.Log{
		{Index: 1, Type: raft.LogConfiguration, Data: []byte("whatever")},
		{Index: 2, Type: raft.LogCommand, Data: data},
		{Index: 3, Type: raft.LogCommand, Data: []byte{1, 2, 3}},
	})
	if len(res) != 3 || res[0] != nil || res[1] != 3 {
		t.Fatalf("results %v", res)
	}
	if err, ok := res[2].(error); !ok || !errors.Is(err, errMalformed) {
		t.Fatalf("malformed entry result %v", res[2])
	}
	if got := <-ch; got != int64(2) {
		t.Fatalf("waiter got %v, want 2 (its own command's result)", got)
	}
	if s := app.state(); s.N != 3 || s.Counts["a"] != 3 {
		t.Fatalf("state %+v", s)
	}
	if st := f.stats.snapshot(); st.BadEntries != 1 || st.Entries != 1 || st.Commands != 3 {
		t.Fatalf("stats %+v", st)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	app := newTestApp()
	f := newTestFSM(app)
	data, _ := encodeEntry([]command{{Cmd: []byte("x")}, {Cmd: []byte("y")}})
	f.Apply(&raft.Log{Index: 9, Type: raft.LogCommand, Data: data})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	if sink.Bytes()[0] != snapshotV1 {
		t.Fatalf("snapshot starts with %d, want the format version", sink.Bytes()[0])
	}
	h, err := readSnapshotHeader(bufio.NewReader(bytes.NewReader(sink.Bytes())))
	if err != nil || h.Index != 9 || h.Node != "t" {
		t.Fatalf("header %+v, %v", h, err)
	}
	app2 := newTestApp()
	f2 := newTestFSM(app2)
	if err := f2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if got, want := app2.state(), app.state(); !reflect.DeepEqual(got, want) {
		t.Fatalf("restored %+v, want %+v", got, want)
	}
	for name, b := range map[string][]byte{
		"empty":     nil,
		"version":   append([]byte{7}, sink.Bytes()[1:]...),
		"header":    {snapshotV1, 0x92, 0xc1},
		"app bytes": sink.Bytes()[:len(sink.Bytes())-10], // truncated JSON
	} {
		before := f2.stats.badSnapshots.Load()
		if err := f2.Restore(io.NopCloser(bytes.NewReader(b))); err == nil {
			t.Errorf("%s: restore accepted a bad snapshot", name)
		}
		if f2.stats.badSnapshots.Load() != before+1 {
			t.Errorf("%s: bad snapshot not counted", name)
		}
	}
}

func FuzzDecodeEntry(f *testing.F) {
	for _, cmds := range [][]command{nil, {{Origin: 1, Seq: 1, Cmd: []byte("a")}}, {{Cmd: nil}, {Origin: 3, Seq: 9, Cmd: []byte(strings.Repeat("z", 40))}}} {
		b, _ := encodeEntry(cmds)
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{entryV1, 0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{entryV1, 0x91, 0x93, 0x01, 0x02, 0xc6, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		cmds, err := decodeEntry(b)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error not marked malformed: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes to an entry that decodes the same.
		again, err := encodeEntry(cmds)
		if err != nil {
			t.Fatal(err)
		}
		cmds2, err := decodeEntry(again)
		if err != nil || len(cmds2) != len(cmds) {
			t.Fatalf("re-decode: %d commands, %v", len(cmds2), err)
		}
		for i := range cmds {
			if cmds[i].Origin != cmds2[i].Origin || cmds[i].Seq != cmds2[i].Seq || !bytes.Equal(cmds[i].Cmd, cmds2[i].Cmd) {
				t.Fatalf("command %d changed", i)
			}
		}
	})
}

func FuzzDecodeSnapshot(f *testing.F) {
	app := newTestApp()
	fs := newTestFSM(app)
	data, _ := encodeEntry([]command{{Cmd: []byte("x")}})
	fs.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	snap, _ := fs.Snapshot()
	var sink memSink
	_ = snap.Persist(&sink)
	f.Add(sink.Bytes())
	f.Add([]byte{snapshotV1})
	f.Add([]byte{snapshotV1, 0x92, 0x01, 0xa1, 'n'})
	f.Add([]byte{2, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		f := newTestFSM(newTestApp())
		err := f.Restore(io.NopCloser(bytes.NewReader(b)))
		if err != nil && f.stats.badSnapshots.Load() != 1 {
			t.Fatalf("failed restore not counted: %v", err)
		}
	})
}

func FuzzDecodeGossip(f *testing.F) {
	b, _ := encodeGossip(gossipMsg{From: "n1", Name: "gw", Payload: []byte("up")})
	f.Add(b)
	m, _ := encodeMeta(nodeMeta{ID: "n1", RaftAddr: "127.0.0.1:1", Expect: 3})
	f.Add(m)
	f.Add([]byte{gossipV1, 0x93, 0xa1, 'a', 0xa1, 'b', 0xc4, 0xff})
	l, _ := encodeLeft([]string{"n1", "n2"})
	f.Add(l)
	f.Fuzz(func(t *testing.T, b []byte) {
		if g, err := decodeGossip(b); err == nil {
			again, err := encodeGossip(g)
			if err != nil {
				t.Fatal(err)
			}
			if g2, err := decodeGossip(again); err != nil || g2.From != g.From || g2.Name != g.Name || !bytes.Equal(g2.Payload, g.Payload) {
				t.Fatalf("gossip round trip changed: %+v vs %+v (%v)", g, g2, err)
			}
		} else if !errors.Is(err, errMalformed) {
			t.Fatalf("gossip error not marked malformed: %v", err)
		}
		if _, err := decodeLeft(b); err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("left-set error not marked malformed: %v", err)
		}
		if _, err := decodeMeta(b); err != nil && !errors.Is(err, errMalformed) {
			t.Fatalf("meta error not marked malformed: %v", err)
		}
	})
}

// snapshotAt returns a snapshot stream whose last command index is index.
func snapshotAt(t *testing.T, index uint64) []byte {
	t.Helper()
	f := newTestFSM(newTestApp())
	data, _ := encodeEntry([]command{{Cmd: []byte("s")}})
	f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

// A proposer waiting for its committed command gets the result when the
// command is applied, even across a snapshot that does not contain it, and
// ErrNoResult when a restored snapshot already contains it.
func TestAwaitResultAcrossRestore(t *testing.T) {
	n, err := New(testConfig(t, "w", 0), newTestApp(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	ch := n.waiters.register(1)
	got := make(chan any, 1)
	go func() {
		res, err := n.awaitResult(ctx, ch, 7)
		if err != nil {
			got <- err
			return
		}
		got <- res
	}()
	if err := n.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotAt(t, 5)))); err != nil {
		t.Fatal(err)
	}
	data, _ := encodeEntry([]command{{Origin: n.epoch, Seq: 1, Cmd: []byte("mine")}})
	n.fsm.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: data})
	if r := <-got; r != int64(1) {
		t.Fatalf("result %v, want 1", r)
	}

	ch = n.waiters.register(2)
	go func() {
		_, err := n.awaitResult(ctx, ch, 8)
		got <- err
	}()
	if err := n.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotAt(t, 9)))); err != nil {
		t.Fatal(err)
	}
	if r := <-got; !errors.Is(r.(error), ErrNoResult) {
		t.Fatalf("got %v, want ErrNoResult", r)
	}
}
