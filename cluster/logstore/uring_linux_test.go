package logstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// ringExpected reports whether this kernel says io_uring is open to every
// process; where it does not (an old kernel, a sysctl, a seccomp profile)
// the store's fallback is what runs, and the ring tests have nothing to
// check.
func ringExpected(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/io_uring_disabled")
	if err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Skipf("io_uring not enabled here (%q, %v): the store uses pwrite and fdatasync", b, err)
	}
}

// On a kernel with io_uring the store appends through its ring.
func TestStoreUsesRing(t *testing.T) {
	ringExpected(t)
	s := open(t, t.TempDir(), 0)
	defer s.Close()
	if s.ring == nil {
		t.Fatal("io_uring is enabled on this kernel but the store has no ring")
	}
	if err := fill(s, 1, 30, 1); err != nil {
		t.Fatal(err)
	}
	check(t, s, 1, 30, term1)
}

// writeSync puts the bytes at the offset and syncs; a write the kernel
// refuses comes back as the write's error, with the linked fdatasync not
// run.
func TestRingWriteSync(t *testing.T) {
	ringExpected(t)
	r, err := newRing()
	if err != nil {
		t.Fatal(err)
	}
	defer r.close()
	path := filepath.Join(t.TempDir(), "f")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for i, chunk := range []string{"hello ", "io_uring ", "world"} {
		off, _ := f.Seek(0, 2)
		if werr, serr := r.writeSync(f, []byte(chunk), off); werr != nil || serr != nil {
			t.Fatalf("chunk %d: write %v, sync %v", i, werr, serr)
		}
	}
	if b, _ := os.ReadFile(path); !bytes.Equal(b, []byte("hello io_uring world")) {
		t.Fatalf("file holds %q", b)
	}
	ro, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	werr, serr := r.writeSync(ro, []byte("x"), 0)
	if !errors.Is(werr, syscall.EBADF) || serr != nil {
		t.Fatalf("write to a read-only file: write %v, sync %v; want EBADF and no sync error", werr, serr)
	}
	// The ring is still usable after a failed request.
	if werr, serr := r.writeSync(f, []byte("!"), 20); werr != nil || serr != nil {
		t.Fatalf("after the failure: write %v, sync %v", werr, serr)
	}
}

// The plain system calls still hold the log (where io_uring is missing).
func TestStoreWithoutRing(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{NoURing: true, SegmentSize: 300})
	if err != nil {
		t.Fatal(err)
	}
	if s.ring != nil {
		t.Fatal("NoURing store has a ring")
	}
	if err := fill(s, 1, 40, 1); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = open(t, dir, 300)
	defer s.Close()
	check(t, s, 1, 40, term1)
}
