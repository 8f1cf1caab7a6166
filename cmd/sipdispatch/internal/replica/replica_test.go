package replica

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

var discardLog = slog.New(slog.DiscardHandler)

func testDests(t *testing.T, uris ...string) []dispatch.Destination {
	t.Helper()
	var out []dispatch.Destination
	for _, u := range uris {
		d, err := dispatch.NewDestination(1, u, 0, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

func flagsOf(t *testing.T, reg *actors.Registry) map[string]string {
	t.Helper()
	st, err := reg.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range st {
		for _, d := range s.Dests {
			out[d.URI] = d.State.Flags.Letters()
		}
	}
	return out
}

// The applier's snapshot restores into another registry with the same state.
func TestApplierSnapshotRestore(t *testing.T) {
	cfg := dispatch.DefaultConfig()
	quiet := actors.Options{Logger: slog.New(slog.DiscardHandler)}
	src, err := actors.NewRegistry(&cfg, dispatch.BuildSets(testDests(t, "sip:a.example.com", "sip:b.example.com")), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Stop()
	op, _ := dispatch.ParseMarkState("ip")
	if err := src.Mark(context.Background(), 1, "sip:b.example.com", op); err != nil {
		t.Fatal(err)
	}
	w, err := (&applier{reg: src}).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := w.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	w.Release()

	dst, err := actors.NewRegistry(&cfg, nil, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Stop()
	app := &applier{reg: dst}
	if err := app.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	want, got := flagsOf(t, src), flagsOf(t, dst)
	if len(got) != 2 || got["sip:b.example.com"] != want["sip:b.example.com"] || !strings.HasPrefix(got["sip:b.example.com"], "I") {
		t.Errorf("restored %v, want %v", got, want)
	}
	if err := app.Restore(strings.NewReader("garbage")); err == nil {
		t.Error("malformed snapshot restored")
	}
	if res := app.Apply(1, []byte("garbage")); res == nil {
		t.Error("malformed command applied without error")
	}
}
