package actors

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

func openTestStore(t *testing.T, path string, now time.Time) *pendingStore {
	t.Helper()
	s, _, err := openPendingStore(path, now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close)
	if runtime.GOOS == "linux" && s.m == nil {
		t.Fatal("on Linux the pending file is mapped")
	}
	return s
}

// What the store holds is in the file while the store is still open — as
// a killed process leaves it, without close — and a record whose first
// byte is missing (a copy cut short) ends the replay.
func TestPendingStoreReadableWithoutClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "load-pending")
	now := time.Unix(1_700_000_000, 0)
	s := openTestStore(t, path, now)
	until := now.Add(time.Hour)
	cmd := func(id string) dispatch.Command {
		return dispatch.Command{Kind: dispatch.CmdLoadConfirm, At: now.UnixNano(), Set: 1, CallID: id}
	}
	s.put(cmd("a"), until)
	s.put(cmd("b"), until)
	s.done(cmd("a"))
	s.put(cmd("c"), until)
	live, err := readPending(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(live); got != "[b c]" {
		t.Fatalf("file lists %s while open, want [b c]", got)
	}
	if s.m != nil { // the mapped layout: cut c's first byte as a crash mid-copy would
		off := s.size - int64(len(s.buf))
		s.m[off] = 0
		if live, _ = readPending(path); ids(live) != "[b]" {
			t.Fatalf("with c torn the file lists %s, want [b]", ids(live))
		}
	}
}

// Past the preallocated room the mapping grows and nothing is lost; a new
// store on the file compacts it to the live commands.
func TestPendingStoreGrows(t *testing.T) {
	path := filepath.Join(t.TempDir(), "load-pending")
	now := time.Unix(1_700_000_000, 0)
	s := openTestStore(t, path, now)
	room := int64(len(s.m))
	until := now.Add(time.Hour)
	n := 0
	for ; room == 0 && n < 1000 || int64(len(s.m)) == room; n++ { // without a mapping: 1,000 writes
		s.put(dispatch.Command{Kind: dispatch.CmdLoadRemove, At: now.UnixNano(), Set: -1, CallID: fmt.Sprintf("call-%06d", n)}, until)
		if s.f == nil {
			t.Fatalf("writing failed after %d records", n)
		}
	}
	for i := 0; i < n; i += 2 {
		s.done(dispatch.Command{Kind: dispatch.CmdLoadRemove, At: now.UnixNano(), Set: -1, CallID: fmt.Sprintf("call-%06d", i)})
	}
	live, err := readPending(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(live) != n/2 || live[0].c.CallID != "call-000001" || live[len(live)-1].c.CallID != fmt.Sprintf("call-%06d", n-1-n%2) {
		t.Fatalf("%d records written (room %d → %d bytes), %d live read back", n, room, len(s.m), len(live))
	}
	s.close()
	s2, stored, err := openPendingStore(path, now, slog.New(slog.DiscardHandler))
	if err == nil {
		s2.close()
	}
	if err != nil || len(stored) != n/2 {
		t.Fatalf("reopened: %d stored, %v; want %d", len(stored), err, n/2)
	}
}

func ids(l []storedLoad) string {
	out := make([]string, len(l))
	for i, x := range l {
		out[i] = x.c.CallID
	}
	return fmt.Sprint(out)
}
