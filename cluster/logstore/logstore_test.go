package logstore

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// entry is the deterministic content of index i at term t, so any entry
// read back can be checked without remembering what was written.
func entry(i, t uint64) *raft.Log {
	l := &raft.Log{Index: i, Term: t, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("log-%d-term-%d", i, t))}
	if i%3 == 0 {
		l.Extensions = []byte{byte(i), 0xee}
		l.AppendedAt = time.Unix(1700000000, int64(i)).UTC()
	}
	if i%5 == 0 {
		l.Type = raft.LogConfiguration
	}
	return l
}

func entries(from, to, term uint64) []*raft.Log {
	var ls []*raft.Log
	for i := from; i <= to; i++ {
		ls = append(ls, entry(i, term))
	}
	return ls
}

// fill stores from..to three entries per call, so that small segments
// rotate within the range.
func fill(s *Store, from, to, term uint64) error {
	for i := from; i <= to; i += 3 {
		if err := s.StoreLogs(entries(i, min(i+2, to), term)); err != nil {
			return err
		}
	}
	return nil
}

func open(t *testing.T, dir string, seg int64) *Store {
	t.Helper()
	s, err := Open(dir, Options{SegmentSize: seg})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// check asserts first..last and that every entry in it reads back as
// entry(i, term(i)), and that the neighbours are not found.
func check(t *testing.T, s *Store, first, last uint64, term func(uint64) uint64) {
	t.Helper()
	if f, _ := s.FirstIndex(); f != first {
		t.Fatalf("FirstIndex %d, want %d", f, first)
	}
	if l, _ := s.LastIndex(); l != last {
		t.Fatalf("LastIndex %d, want %d", l, last)
	}
	for i := first; i <= last && last > 0; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", i, err)
		}
		want := entry(i, term(i))
		if got.Index != want.Index || got.Term != want.Term || got.Type != want.Type ||
			!bytes.Equal(got.Data, want.Data) || !bytes.Equal(got.Extensions, want.Extensions) || !got.AppendedAt.Equal(want.AppendedAt) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", i, got, *want)
		}
	}
	outside := []uint64{0, last + 1}
	if first > 1 {
		outside = append(outside, first-1)
	}
	for _, i := range outside {
		if err := s.GetLog(i, new(raft.Log)); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) outside %d..%d: %v, want ErrLogNotFound", i, first, last, err)
		}
	}
}

func term1(uint64) uint64 { return 1 }

// The LogStore contract, in the manner of raft-boltdb's tests, each case run
// with one large segment and with segments of a few entries, and checked
// both live and after a reopen.
func TestConformance(t *testing.T) {
	cases := []struct {
		name        string
		do          func(s *Store) error
		wantErr     string // in do's error; empty: must succeed
		first, last uint64
		term        func(uint64) uint64
	}{
		{"empty", func(*Store) error { return nil }, "", 0, 0, term1},
		{"store one", func(s *Store) error { return s.StoreLog(entry(1, 1)) }, "", 1, 1, term1},
		{"store many", func(s *Store) error { return s.StoreLogs(entries(1, 40, 1)) }, "", 1, 40, term1},
		{"one at a time", func(s *Store) error {
			for i := uint64(1); i <= 25; i++ {
				if err := s.StoreLog(entry(i, 1)); err != nil {
					return err
				}
			}
			return nil
		}, "", 1, 25, term1},
		{"empty store starts anywhere", func(s *Store) error { return fill(s, 100, 120, 1) }, "", 100, 120, term1},
		{"gap refused", func(s *Store) error {
			if err := fill(s, 1, 5, 1); err != nil {
				return err
			}
			return s.StoreLog(entry(7, 1))
		}, "not contiguous", 1, 5, term1},
		{"overlap refused", func(s *Store) error {
			if err := fill(s, 1, 5, 1); err != nil {
				return err
			}
			return fill(s, 5, 6, 1)
		}, "not contiguous", 1, 5, term1},
		{"gap inside a batch refused", func(s *Store) error {
			return s.StoreLogs([]*raft.Log{entry(1, 1), entry(3, 1)})
		}, "not contiguous", 0, 0, term1},
		{"delete head", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			return s.DeleteRange(1, 17)
		}, "", 18, 40, term1},
		{"delete head twice then append", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			if err := s.DeleteRange(1, 10); err != nil {
				return err
			}
			if err := s.DeleteRange(11, 33); err != nil {
				return err
			}
			return fill(s, 41, 50, 1)
		}, "", 34, 50, term1},
		{"delete tail, append another term", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			if err := s.DeleteRange(23, 40); err != nil {
				return err
			}
			return fill(s, 23, 30, 2)
		}, "", 1, 30, func(i uint64) uint64 { return map[bool]uint64{true: 2, false: 1}[i >= 23] }},
		{"delete tail of one entry", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			return s.DeleteRange(40, 40)
		}, "", 1, 39, term1},
		{"delete tail after head", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			if err := s.DeleteRange(1, 12); err != nil {
				return err
			}
			if err := s.DeleteRange(14, 40); err != nil {
				return err
			}
			return fill(s, 14, 16, 3)
		}, "", 13, 16, func(i uint64) uint64 { return map[bool]uint64{true: 3, false: 1}[i >= 14] }},
		{"delete all", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			return s.DeleteRange(1, 40)
		}, "", 0, 0, term1},
		{"delete all, then append later (snapshot install)", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			if err := s.DeleteRange(1, 40); err != nil {
				return err
			}
			return fill(s, 500, 510, 4)
		}, "", 500, 510, func(uint64) uint64 { return 4 }},
		{"delete all, then append earlier", func(s *Store) error {
			if err := fill(s, 10, 40, 1); err != nil {
				return err
			}
			if err := s.DeleteRange(10, 40); err != nil {
				return err
			}
			return fill(s, 3, 12, 5)
		}, "", 3, 12, func(uint64) uint64 { return 5 }},
		{"delete beyond both ends", func(s *Store) error {
			if err := fill(s, 5, 9, 1); err != nil {
				return err
			}
			return s.DeleteRange(1, 100)
		}, "", 0, 0, term1},
		{"delete outside is a no-op", func(s *Store) error {
			if err := fill(s, 5, 9, 1); err != nil {
				return err
			}
			if err := s.DeleteRange(1, 4); err != nil {
				return err
			}
			if err := s.DeleteRange(10, 20); err != nil {
				return err
			}
			return s.DeleteRange(9, 8)
		}, "", 5, 9, term1},
		{"delete on empty is a no-op", func(s *Store) error { return s.DeleteRange(1, 10) }, "", 0, 0, term1},
		{"delete the middle refused", func(s *Store) error {
			if err := fill(s, 1, 40, 1); err != nil {
				return err
			}
			return s.DeleteRange(10, 20)
		}, "only a head or a tail", 1, 40, term1},
	}
	for _, seg := range []int64{DefaultSegmentSize, 150} {
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/seg=%d", c.name, seg), func(t *testing.T) {
				dir := t.TempDir()
				s := open(t, dir, seg)
				err := c.do(s)
				switch {
				case c.wantErr == "" && err != nil:
					t.Fatalf("unexpected error: %v", err)
				case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
					t.Fatalf("error %v, want one saying %q", err, c.wantErr)
				}
				check(t, s, c.first, c.last, c.term)
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = open(t, dir, seg)
				defer s.Close()
				check(t, s, c.first, c.last, c.term)
				if c.last > 0 { // the reopened log appends where it ended
					if err := s.StoreLog(entry(c.last+1, 9)); err != nil {
						t.Fatalf("append after reopen: %v", err)
					}
					if err := s.GetLog(c.last+1, new(raft.Log)); err != nil {
						t.Fatal(err)
					}
				}
			})
		}
	}
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

// A crash inside a write leaves a torn or corrupt tail in the newest
// segment: Open cuts it at the first bad record, keeps everything before,
// and the log goes on from there.
func TestTornTail(t *testing.T) {
	damage := map[string]func(t *testing.T, path string, size int64, k int){
		"truncated": func(t *testing.T, path string, size int64, k int) {
			if err := os.Truncate(path, size-int64(k)); err != nil {
				t.Fatal(err)
			}
		},
		"flipped": func(t *testing.T, path string, size int64, k int) {
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			b := make([]byte, 1)
			f.ReadAt(b, size-int64(k))
			b[0] ^= 0x40
			f.WriteAt(b, size-int64(k))
		},
		"zeros appended": func(t *testing.T, path string, size int64, k int) {
			f, err := os.OpenFile(path, os.O_RDWR|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			f.Write(make([]byte, k))
		},
	}
	rec := int64(len(appendRecord(nil, entry(20, 1))))
	for name, hurt := range damage {
		for _, k := range []int{1, 3, 8, 9, int(rec) - 1, int(rec), int(rec) + 5} {
			t.Run(fmt.Sprintf("%s/%d", name, k), func(t *testing.T) {
				dir := t.TempDir()
				s := open(t, dir, 0)
				if err := fill(s, 1, 19, 1); err != nil {
					t.Fatal(err)
				}
				if err := s.StoreLog(entry(20, 1)); err != nil {
					t.Fatal(err)
				}
				s.Close()
				path := segFiles(t, dir)[0]
				st, _ := os.Stat(path)
				hurt(t, path, st.Size(), k)
				s = open(t, dir, 0)
				defer s.Close()
				// Damage within the last record loses it; within the one
				// before also that one; zeros after it lose nothing.
				want := uint64(20)
				switch {
				case name == "zeros appended":
				case int64(k) <= rec:
					want = 19
				default:
					want = 18
				}
				check(t, s, 1, want, term1)
				if st2, _ := os.Stat(path); name == "zeros appended" && st2.Size() != st.Size() {
					t.Errorf("file is %d bytes after repair, want the %d before the zeros", st2.Size(), st.Size())
				}
				if err := fill(s, want+1, want+3, 2); err != nil {
					t.Fatalf("append after repair: %v", err)
				}
				s.Close()
				s = open(t, dir, 0)
				defer s.Close()
				check(t, s, 1, want+3, func(i uint64) uint64 { return map[bool]uint64{true: 2, false: 1}[i > want] })
			})
		}
	}
}

// Bytes that were synced and then rotted are never silently dropped: a bad
// record in a segment that is not the newest fails Open.
func TestCorruptSealedSegment(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, 150)
	if err := fill(s, 1, 10, 1); err != nil {
		t.Fatal(err)
	}
	for i := uint64(11); i <= 30; i++ {
		if err := s.StoreLog(entry(i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs := segFiles(t, dir)
	if len(segs) < 3 {
		t.Fatalf("%d segments, want several", len(segs))
	}
	f, err := os.OpenFile(segs[0], os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, int64(len(segMagic))+recHeader+3)
	f.Close()
	if _, err := Open(dir, Options{SegmentSize: 150}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open with a rotten sealed segment: %v, want ErrCorrupt", err)
	}
}

// A segment created just before a crash (no header, or a header and no
// record) holds nothing and is removed.
func TestEmptyNewestSegmentRemoved(t *testing.T) {
	for _, content := range [][]byte{nil, []byte("sdw"), make([]byte, 8), []byte(segMagic)} {
		dir := t.TempDir()
		s := open(t, dir, 0)
		if err := fill(s, 1, 5, 1); err != nil {
			t.Fatal(err)
		}
		s.Close()
		path := filepath.Join(dir, fmt.Sprintf(segNameFmt, uint64(1), uint64(6)))
		if err := os.WriteFile(path, content, 0o640); err != nil {
			t.Fatal(err)
		}
		s = open(t, dir, 0)
		check(t, s, 1, 5, term1)
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("empty newest segment %q kept: %v", content, err)
		}
		if err := fill(s, 6, 8, 1); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
}

// copyDir copies the regular files of src into dst.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o640); err != nil {
			t.Fatal(err)
		}
	}
}

// A crash after meta is written but before the dead segments are removed
// must not bring any of them back, after a head compaction as after a
// delete-all followed by appends at lower indexes (a snapshot install).
func TestCrashBeforeSegmentsRemoved(t *testing.T) {
	t.Run("head", func(t *testing.T) {
		dir, old := t.TempDir(), t.TempDir()
		s := open(t, dir, 150)
		for i := uint64(1); i <= 30; i++ {
			if err := s.StoreLog(entry(i, 1)); err != nil {
				t.Fatal(err)
			}
		}
		copyDir(t, dir, old)
		if err := s.DeleteRange(1, 21); err != nil {
			t.Fatal(err)
		}
		s.Close()
		copyDir(t, old, dir) // the removed segments are back (old has no meta)
		s = open(t, dir, 150)
		defer s.Close()
		check(t, s, 22, 30, term1)
	})
	t.Run("all", func(t *testing.T) {
		dir, old := t.TempDir(), t.TempDir()
		s := open(t, dir, 150)
		for i := uint64(1); i <= 30; i++ {
			if err := s.StoreLog(entry(i, 1)); err != nil {
				t.Fatal(err)
			}
		}
		copyDir(t, dir, old)
		if err := s.DeleteRange(1, 30); err != nil {
			t.Fatal(err)
		}
		if err := fill(s, 12, 14, 7); err != nil {
			t.Fatal(err)
		}
		s.Close()
		for _, p := range segFiles(t, old) { // old segments back, old meta not
			b, _ := os.ReadFile(p)
			os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o640)
		}
		s = open(t, dir, 150)
		defer s.Close()
		check(t, s, 12, 14, func(uint64) uint64 { return 7 })
		if n := len(segFiles(t, dir)); n != 1 {
			t.Errorf("%d segment files after recovery, want 1", n)
		}
	})
}

// GetLog runs concurrently with appends and deletions (go test -race).
func TestConcurrentReads(t *testing.T) {
	s := open(t, t.TempDir(), 400)
	defer s.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(1); i <= 300; i++ {
			if err := s.StoreLog(entry(i, 1)); err != nil {
				t.Error(err)
				return
			}
			if i%50 == 0 {
				if err := s.DeleteRange(1, i-20); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	for {
		select {
		case <-done:
			check(t, s, 281, 300, term1)
			return
		default:
		}
		first, _ := s.FirstIndex()
		last, _ := s.LastIndex()
		if last == 0 {
			continue
		}
		var l raft.Log
		err := s.GetLog(last, &l)
		if err != nil && !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) in %d..%d: %v", last, first, last, err)
		}
		if err == nil && l.Index != last {
			t.Fatalf("GetLog(%d) returned index %d", last, l.Index)
		}
	}
}

// Whatever a crash leaves after the last synced record of the newest
// segment, Open keeps every synced entry and never panics; it may refuse
// only an intact record out of order (ErrCorrupt).
func FuzzTornTail(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, 40))
	f.Add(appendRecord(nil, entry(6, 1))[:20])
	f.Add(appendRecord(nil, entry(6, 1)))
	f.Add(appendRecord(nil, entry(9, 1)))
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		opts := Options{NoSync: true} // what is checked is the parsing
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.StoreLogs(entries(1, 5, 1)); err != nil {
			t.Fatal(err)
		}
		s.Close()
		fd, err := os.OpenFile(segFiles(t, dir)[0], os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		fd.Write(tail)
		fd.Close()
		s, err = Open(dir, opts)
		if errors.Is(err, ErrCorrupt) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if f, _ := s.FirstIndex(); f != 1 {
			t.Fatalf("first index %d", f)
		}
		last, _ := s.LastIndex()
		if last < 5 {
			t.Fatalf("lost synced entries: last index %d", last)
		}
		for i := uint64(1); i <= last; i++ {
			if err := s.GetLog(i, new(raft.Log)); err != nil {
				t.Fatalf("GetLog(%d): %v", i, err)
			}
		}
	})
}
