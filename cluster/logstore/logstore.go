// Package logstore is the raft log of a cluster node: a raft.LogStore on
// append-only segment files with one fdatasync per StoreLogs call.
//
// Why not raft-boltdb: bbolt syncs twice per transaction (the pages, then
// the meta page) and does B+tree work for what is an append-only log; on a
// virtual disk each fdatasync costs as much CPU as a large part of a call.
// hashicorp/raft-wal, which Consul moved to, is not available to this
// module, so this is a small one of our own.
//
// Layout of the directory:
//
//	meta                       minimum live segment id and first index (written by rename)
//	<id:016x>-<base:020d>.seg  segments: an 8-byte magic, then records
//
// A record is
//
//	u32 payload length | u32 CRC32C (Castagnoli) of the length bytes and the payload | payload
//
// and the payload is the raft.Log in a fixed binary layout (see encodeLog).
// The store keeps the offset of every record in memory; GetLog reads one
// record with pread (raft.LogCache in front serves the recent ones).
//
// Durability: StoreLogs writes all its records with one pwrite and then
// fdatasyncs once; a new segment file and every removal are followed by an
// fsync of the directory. At Open each segment is read back and checked:
// in the newest one a torn or corrupt tail (a crash inside a write) is cut
// off at the first bad record; anywhere else a bad record is an error,
// because those bytes had been synced.
//
// Deletion: raft deletes from the head after a snapshot (whole segments
// are removed, the new first index is recorded in meta), from the tail when
// a follower drops a conflicting suffix (the segment is truncated, newer
// ones removed), and everything after a snapshot install (the store is
// monotonic: raft.MonotonicLogStore, so no gaps ever reach it).
package logstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// DefaultSegmentSize is the size past which a new segment is started.
	// Head compaction removes whole segments only, so a smaller segment
	// frees disk sooner; 16 MiB holds tens of thousands of entries.
	DefaultSegmentSize = 16 << 20
	// maxSegmentSize caps SegmentSize; maxRecBytes caps what one StoreLogs
	// call writes, so a record length (uint32) read back is plausible only
	// below it.
	maxSegmentSize = 1 << 30

	segMagic    = "sdwal001"
	recHeader   = 8                     // length + CRC
	logFixed    = 8 + 8 + 1 + 8 + 4 + 4 // index, term, type, appended-at, data and extensions lengths
	metaName    = "meta"
	metaMagic   = "sdwalmt1"
	metaSize    = 8 + 8 + 8 + 4
	segSuffix   = ".seg"
	segNameFmt  = "%016x-%020d" + segSuffix
	maxRecBytes = maxSegmentSize
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrNonContiguous is returned by StoreLogs for entries that do not follow
// the last stored index (or each other) by exactly one.
var ErrNonContiguous = errors.New("logstore: log indexes not contiguous")

// ErrCorrupt reports bytes that had been synced but do not read back.
var ErrCorrupt = errors.New("logstore: corrupt segment")

// errClosed is returned after Close.
var errClosed = errors.New("logstore: closed")

// Options tune a Store. The zero value is the durable default.
type Options struct {
	// NoSync skips fdatasync and directory fsyncs (tests and comparisons
	// only: a machine crash can then lose acknowledged entries).
	NoSync bool
	// NoURing appends with plain pwrite and fdatasync system calls even
	// where io_uring is available (tests and comparisons).
	NoURing bool
	// SegmentSize is the size past which a new segment file is started;
	// 0 means DefaultSegmentSize.
	SegmentSize int64
	// Logger receives what recovery at Open repaired; nil discards.
	Logger *slog.Logger
}

// segment is one file: records base, base+1, ... at offsets.
type segment struct {
	id      uint64
	base    uint64
	f       *os.File
	offsets []int64 // offsets[i] = start of record base+i
	size    int64   // bytes written and synced (published)
}

func (g *segment) count() uint64 { return uint64(len(g.offsets)) }

// Store is a raft.LogStore and raft.MonotonicLogStore. Its methods are safe
// for concurrent use: writes (StoreLogs, DeleteRange) are serialised and
// do their I/O without blocking reads of published entries.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	wmu  sync.Mutex // serialises writers; held through their I/O
	buf  []byte     // guarded by wmu: StoreLogs' encoding buffer
	ring *ring      // guarded by wmu: appends go through io_uring when not nil
	err  error      // guarded by wmu: sticky after a failed fdatasync

	mu     sync.RWMutex
	segs   []*segment // guarded by mu (changed with wmu held too); by id and base
	first  uint64     // guarded by mu: first live index, 0 when empty
	last   uint64     // guarded by mu: last index, 0 when empty
	minID  uint64     // guarded by mu: segments below this id are dead (meta)
	nextID uint64     // guarded by mu
	closed bool       // guarded by mu
}

var (
	_ raft.LogStore          = (*Store)(nil)
	_ raft.MonotonicLogStore = (*Store)(nil)
)

// Open opens (creating it if needed) the log in dir, checks every segment
// and repairs a torn tail of the newest one.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize > maxSegmentSize {
		return nil, fmt.Errorf("logstore: segment size %d above %d", opts.SegmentSize, maxSegmentSize)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("logstore: %w", err)
	}
	s := &Store{dir: dir, opts: opts, log: opts.Logger}
	if err := s.recover(); err != nil {
		s.closeFiles()
		return nil, err
	}
	if !opts.NoSync && !opts.NoURing {
		r, err := newRing()
		if err != nil {
			s.log.Info("logstore: appending with pwrite and fdatasync", "reason", err)
		}
		s.ring = r
	}
	return s, nil
}

// recover reads meta and the segments into memory.
func (s *Store) recover() error {
	metaFirst, err := s.readMeta()
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	changed := false
	var segs []*segment
	for _, e := range entries {
		name := e.Name()
		if name == metaName+".tmp" {
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("logstore: remove leftover: %w", err)
			}
			changed = true
			continue
		}
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		id, base, ok := parseSegName(name)
		if !ok {
			return fmt.Errorf("logstore: unexpected file %s in %s", name, s.dir)
		}
		if id < s.minID { // deleted by a head compaction that a crash interrupted
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("logstore: remove dead segment: %w", err)
			}
			changed = true
			continue
		}
		segs = append(segs, &segment{id: id, base: base})
	}
	slices.SortFunc(segs, func(a, b *segment) int { return cmpU64(a.id, b.id) })
	s.nextID = s.minID
	for i, g := range segs {
		newest := i == len(segs)-1
		if err := s.load(g, newest); err != nil {
			return err
		}
		s.segs = append(s.segs, g)
		s.nextID = g.id + 1
		if i > 0 {
			prev := segs[i-1]
			if g.base != prev.base+prev.count() {
				return fmt.Errorf("%w: %s starts at index %d, after %d", ErrCorrupt, segName(g), g.base, prev.base+prev.count()-1)
			}
		}
	}
	// A newest segment left empty (crash between its creation and its first
	// write, or a torn first write) holds nothing: remove it.
	if n := len(s.segs); n > 0 && s.segs[n-1].count() == 0 {
		g := s.segs[n-1]
		g.f.Close()
		if err := os.Remove(filepath.Join(s.dir, segName(g))); err != nil {
			return fmt.Errorf("logstore: remove empty segment: %w", err)
		}
		s.segs = s.segs[:n-1]
		changed = true
	}
	for _, g := range s.segs[:max(len(s.segs)-1, 0)] {
		if g.count() == 0 {
			return fmt.Errorf("%w: %s is empty but not the newest", ErrCorrupt, segName(g))
		}
	}
	if len(s.segs) > 0 {
		s.first = max(metaFirst, s.segs[0].base)
		tail := s.segs[len(s.segs)-1]
		s.last = tail.base + tail.count() - 1
		if s.first > s.last {
			return fmt.Errorf("%w: first index %d (meta) above the last stored %d", ErrCorrupt, s.first, s.last)
		}
	}
	if changed {
		return s.syncDir()
	}
	return nil
}

// load opens g and indexes its records. In the newest segment a bad record
// ends the log there (the file is truncated to it); elsewhere it is
// corruption.
func (s *Store) load(g *segment, newest bool) error {
	path := filepath.Join(s.dir, segName(g))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	g.f = f
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("logstore: %w", err)
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return fmt.Errorf("logstore: read %s: %w", path, err)
	}
	if newest && (len(data) < len(segMagic) || string(data[:len(segMagic)]) == string(make([]byte, len(segMagic)))) {
		return nil // torn at creation: holds nothing, removed by recover
	}
	if string(data[:len(segMagic)]) != segMagic {
		return fmt.Errorf("%w: %s has no segment header", ErrCorrupt, path)
	}
	off := int64(len(segMagic))
	for off < int64(len(data)) {
		n, index, why := checkRecord(data[off:])
		if why == "" && index != g.base+g.count() {
			// An intact record out of order is no torn write.
			return fmt.Errorf("%w: %s at offset %d: index %d where %d was expected", ErrCorrupt, path, off, index, g.base+g.count())
		}
		if why != "" {
			if !newest {
				return fmt.Errorf("%w: %s at offset %d: %s", ErrCorrupt, path, off, why)
			}
			g.size = off
			return s.repair(g, off, int64(len(data)), why)
		}
		g.offsets = append(g.offsets, off)
		off += int64(n)
	}
	g.size = off
	return nil
}

// repair cuts the newest segment at off (a torn or corrupt tail) and syncs.
func (s *Store) repair(g *segment, off, size int64, why string) error {
	s.log.Warn("logstore: dropping the torn tail of the newest segment",
		"segment", segName(g), "offset", off, "bytes", size-off, "reason", why, "entries_kept", g.count())
	if err := g.f.Truncate(off); err != nil {
		return fmt.Errorf("logstore: repair %s: %w", segName(g), err)
	}
	return s.syncFile(g.f, true)
}

// checkRecord validates the record at the start of b and returns its
// length and raft index, or why it is not a whole, intact record.
func checkRecord(b []byte) (n int, index uint64, why string) {
	if len(b) < recHeader {
		return 0, 0, "short record header"
	}
	plen := binary.LittleEndian.Uint32(b)
	if plen < logFixed || int64(plen) > maxRecBytes {
		return 0, 0, fmt.Sprintf("bad record length %d", plen)
	}
	if len(b)-recHeader < int(plen) {
		return 0, 0, "short record"
	}
	if binary.LittleEndian.Uint32(b[4:]) != recordCRC(b[:4], b[recHeader:recHeader+int(plen)]) {
		return 0, 0, "checksum mismatch"
	}
	p := b[recHeader : recHeader+int(plen)]
	if dl, el := binary.LittleEndian.Uint32(p[25:]), binary.LittleEndian.Uint32(p[29:]); uint64(logFixed)+uint64(dl)+uint64(el) != uint64(plen) {
		return 0, 0, "inconsistent record lengths"
	}
	return recHeader + int(plen), binary.LittleEndian.Uint64(p), ""
}

func recordCRC(lenBytes, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(lenBytes, castagnoli), castagnoli, payload)
}

// appendRecord encodes l as one record onto b.
func appendRecord(b []byte, l *raft.Log) []byte {
	start := len(b)
	plen := logFixed + len(l.Data) + len(l.Extensions)
	b = binary.LittleEndian.AppendUint32(b, uint32(plen))
	b = binary.LittleEndian.AppendUint32(b, 0) // CRC, below
	b = binary.LittleEndian.AppendUint64(b, l.Index)
	b = binary.LittleEndian.AppendUint64(b, l.Term)
	b = append(b, byte(l.Type))
	var at int64 // zero time stays zero
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(at))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(l.Data)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(l.Extensions)))
	b = append(b, l.Data...)
	b = append(b, l.Extensions...)
	binary.LittleEndian.PutUint32(b[start+4:], recordCRC(b[start:start+4], b[start+recHeader:]))
	return b
}

// decodeLog fills l from a checked payload; Data and Extensions alias p.
func decodeLog(p []byte, l *raft.Log) {
	l.Index = binary.LittleEndian.Uint64(p)
	l.Term = binary.LittleEndian.Uint64(p[8:])
	l.Type = raft.LogType(p[16])
	l.AppendedAt = time.Time{}
	if at := int64(binary.LittleEndian.Uint64(p[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	dl := binary.LittleEndian.Uint32(p[25:])
	el := binary.LittleEndian.Uint32(p[29:])
	l.Data, l.Extensions = nil, nil
	if dl > 0 {
		l.Data = p[logFixed : logFixed+dl : logFixed+dl]
	}
	if el > 0 {
		l.Extensions = p[logFixed+dl : logFixed+dl+el : logFixed+dl+el]
	}
}

// FirstIndex returns the first index stored, 0 when empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.first, nil
}

// LastIndex returns the last index stored, 0 when empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.last, nil
}

// IsMonotonic tells raft that this store never holds gaps: after a
// snapshot install raft deletes the whole log instead of leaving one.
func (s *Store) IsMonotonic() bool { return true }

// GetLog reads the entry at index from its segment.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	if s.last == 0 || index < s.first || index > s.last {
		return raft.ErrLogNotFound
	}
	// The newest segment is by far the most read; search the others.
	i := len(s.segs) - 1
	if index < s.segs[i].base {
		i = find(s.segs, index)
	}
	g := s.segs[i]
	k := index - g.base
	off := g.offsets[k]
	end := g.size
	if k+1 < g.count() {
		end = g.offsets[k+1]
	}
	rec := make([]byte, end-off)
	if _, err := g.f.ReadAt(rec, off); err != nil {
		return fmt.Errorf("logstore: read index %d from %s: %w", index, segName(g), err)
	}
	n, got, why := checkRecord(rec)
	if why == "" && (got != index || n != len(rec)) {
		why = fmt.Sprintf("holds index %d (%d bytes)", got, n)
	}
	if why != "" {
		return fmt.Errorf("%w: %s index %d: %s", ErrCorrupt, segName(g), index, why)
	}
	decodeLog(rec[recHeader:], l)
	return nil
}

// find returns the position of the segment holding index (which is stored).
func find(segs []*segment, index uint64) int {
	i, _ := slices.BinarySearchFunc(segs, index, func(g *segment, x uint64) int {
		if x < g.base {
			return 1
		}
		return -1
	})
	return i - 1
}

// StoreLog stores one entry.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends logs, which must follow the last stored index (any
// first index when the store is empty), with one write and one fdatasync.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.err != nil {
		return s.err
	}
	s.mu.RLock()
	closed, last := s.closed, s.last
	s.mu.RUnlock()
	if closed {
		return errClosed
	}
	for i, l := range logs {
		if (i > 0 || last != 0) && l.Index != last+1 {
			return fmt.Errorf("%w: index %d after %d", ErrNonContiguous, l.Index, last)
		}
		last = l.Index
	}
	b := s.buf[:0]
	for _, l := range logs {
		b = appendRecord(b, l)
	}
	s.buf = b
	if cap(s.buf) > 4<<20 { // do not keep one huge batch's buffer
		s.buf = nil
	}
	if len(b) > maxRecBytes { // load would not accept it back
		return fmt.Errorf("logstore: %d bytes in one call, limit %d", len(b), maxRecBytes)
	}
	g, err := s.segmentFor(logs[0].Index, int64(len(b)))
	if err != nil {
		return err
	}
	werr, serr := s.appendSync(g.f, b, g.size)
	if werr != nil {
		// Nothing was acknowledged past g.size: cut what may have been
		// written so the next write starts from clean bytes.
		if terr := g.f.Truncate(g.size); terr != nil {
			s.err = fmt.Errorf("logstore: write failed (%v) and could not be undone: %w", werr, terr)
		}
		return fmt.Errorf("logstore: write %s: %w", segName(g), werr)
	}
	if serr != nil {
		// After a failed fdatasync the kernel may have dropped the dirty
		// pages: nothing written since the last good sync can be trusted,
		// so the store refuses further writes until it is reopened.
		s.err = fmt.Errorf("logstore: fdatasync %s failed, reopen to recover: %w", segName(g), serr)
		return s.err
	}
	s.mu.Lock()
	off := g.size
	for _, l := range logs {
		g.offsets = append(g.offsets, off)
		off += int64(recHeader + logFixed + len(l.Data) + len(l.Extensions))
	}
	g.size = off
	if s.last == 0 {
		s.first = logs[0].Index
	}
	s.last = last
	s.mu.Unlock()
	return nil
}

// appendSync writes b at off of f and fdatasyncs it: through the ring
// when there is one, else (and from then on, if the ring fails to submit;
// for this append, if the ring did not finish it) with pwrite and
// fdatasync. wmu held.
func (s *Store) appendSync(f *os.File, b []byte, off int64) (werr, serr error) {
	if s.ring != nil {
		werr, serr = s.ring.writeSync(f, b, off)
		switch werr {
		case errRingRedo: // this append only
		case errRingBroken:
			s.log.Warn("logstore: io_uring submission failed; appending with pwrite and fdatasync from now on")
			s.ring = nil
		default:
			return werr, serr
		}
	}
	if _, err := f.WriteAt(b, off); err != nil {
		return err, nil
	}
	return nil, s.syncFile(f, false)
}

// segmentFor returns the segment to append n bytes starting at index to,
// starting a new one when there is none or the newest is full. wmu held.
func (s *Store) segmentFor(index uint64, n int64) (*segment, error) {
	s.mu.RLock()
	var g *segment
	if len(s.segs) > 0 {
		g = s.segs[len(s.segs)-1]
	}
	s.mu.RUnlock()
	switch {
	case g == nil:
	case g.count() == 0 && g.base != index:
		// Left empty by a failed write on an empty store, and the next
		// append starts elsewhere: start afresh.
		s.mu.Lock()
		s.segs = s.segs[:len(s.segs)-1]
		s.mu.Unlock()
		if err := s.remove([]*segment{g}); err != nil {
			return nil, err
		}
	case g.count() == 0 || g.size+n <= s.opts.SegmentSize:
		return g, nil
	}
	return s.newSegment(index)
}

// newSegment creates and syncs an empty segment starting at base. wmu held.
func (s *Store) newSegment(base uint64) (*segment, error) {
	s.mu.RLock()
	g := &segment{id: s.nextID, base: base, size: int64(len(segMagic))}
	s.mu.RUnlock()
	path := filepath.Join(s.dir, segName(g))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return nil, fmt.Errorf("logstore: new segment: %w", err)
	}
	g.f = f
	if _, err := f.WriteAt([]byte(segMagic), 0); err == nil {
		if err = s.syncFile(f, false); err == nil {
			err = s.syncDir()
		}
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("logstore: new segment %s: %w", path, err)
	}
	s.mu.Lock()
	s.segs = append(s.segs, g)
	s.nextID++
	s.mu.Unlock()
	return g, nil
}

// DeleteRange deletes the entries min..max (inclusive). raft deletes only
// a head (after a snapshot), a tail (a follower's conflicting suffix) or
// everything (after a snapshot install); a range strictly inside the log
// is refused.
func (s *Store) DeleteRange(min, max uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	first, last, closed := s.first, s.last, s.closed
	s.mu.RUnlock()
	switch {
	case closed:
		return errClosed
	case min > max || last == 0 || max < first || min > last:
		return nil // nothing stored in the range
	case min <= first && max >= last:
		return s.deleteAll()
	case min <= first:
		return s.deleteHead(max + 1)
	case max >= last:
		return s.deleteTail(min)
	default:
		return fmt.Errorf("logstore: delete %d..%d: only a head or a tail of %d..%d can be deleted", min, max, first, last)
	}
}

// deleteAll empties the store: meta first marks every segment dead, so a
// crash midway cannot bring any back. wmu held.
func (s *Store) deleteAll() error {
	s.mu.RLock()
	next := s.nextID
	s.mu.RUnlock()
	return s.dropBefore(next, 0, 0)
}

// deleteHead makes first the first index, removing the segments wholly
// before it. wmu held.
func (s *Store) deleteHead(first uint64) error {
	s.mu.RLock()
	keep := s.segs[find(s.segs, first)]
	s.mu.RUnlock()
	return s.dropBefore(keep.id, first, first)
}

// dropBefore records meta (minID, metaFirst), then removes the segments
// below minID and sets the first index (0: the store is empty). wmu held.
func (s *Store) dropBefore(minID, metaFirst, first uint64) error {
	if err := s.writeMeta(minID, metaFirst); err != nil {
		return err
	}
	s.mu.Lock()
	var dead []*segment
	i := 0
	for i < len(s.segs) && s.segs[i].id < minID {
		dead = append(dead, s.segs[i])
		i++
	}
	s.segs = slices.Delete(s.segs, 0, i)
	s.minID = minID
	if len(s.segs) == 0 {
		s.first, s.last = 0, 0
	} else {
		s.first = first
	}
	s.mu.Unlock()
	return s.remove(dead)
}

// deleteTail removes min and everything after it: newer segments first, so
// that a crash midway leaves a prefix of the log, then the segment holding
// min is truncated. wmu held; min is above the first index.
func (s *Store) deleteTail(min uint64) error {
	s.mu.Lock()
	i := find(s.segs, min)
	g := s.segs[i]
	var dead []*segment
	cut := i + 1
	if min == g.base { // the whole segment goes
		cut = i
	}
	for j := len(s.segs) - 1; j >= cut; j-- {
		dead = append(dead, s.segs[j])
	}
	s.segs = s.segs[:cut]
	s.last = min - 1
	var keepSize int64
	if cut > i {
		keepSize = g.offsets[min-g.base]
		g.offsets = g.offsets[:min-g.base]
		g.size = keepSize
	}
	s.mu.Unlock()
	if err := s.remove(dead); err != nil {
		return err
	}
	if cut > i {
		if err := g.f.Truncate(keepSize); err != nil {
			s.err = fmt.Errorf("logstore: truncate %s: %w", segName(g), err)
			return s.err
		}
		if err := s.syncFile(g.f, true); err != nil {
			s.err = fmt.Errorf("logstore: sync truncated %s: %w", segName(g), err)
			return s.err
		}
	}
	return nil
}

// remove closes and deletes dead segments in order, then syncs the
// directory.
func (s *Store) remove(dead []*segment) error {
	if len(dead) == 0 {
		return nil
	}
	for _, g := range dead {
		g.f.Close()
		if err := os.Remove(filepath.Join(s.dir, segName(g))); err != nil {
			return fmt.Errorf("logstore: remove segment: %w", err)
		}
	}
	return s.syncDir()
}

// readMeta loads minID and returns the recorded first index.
func (s *Store) readMeta() (uint64, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, metaName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("logstore: %w", err)
	}
	if len(b) != metaSize || string(b[:8]) != metaMagic ||
		binary.LittleEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], castagnoli) {
		return 0, fmt.Errorf("%w: %s unreadable", ErrCorrupt, filepath.Join(s.dir, metaName))
	}
	s.minID = binary.LittleEndian.Uint64(b[8:])
	return binary.LittleEndian.Uint64(b[16:]), nil
}

// writeMeta replaces meta atomically: temp file, sync, rename, sync dir.
func (s *Store) writeMeta(minID, first uint64) error {
	b := make([]byte, 0, metaSize)
	b = append(b, metaMagic...)
	b = binary.LittleEndian.AppendUint64(b, minID)
	b = binary.LittleEndian.AppendUint64(b, first)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := filepath.Join(s.dir, metaName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("logstore: write meta: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = s.syncFile(f, true)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, metaName))
	}
	if err == nil {
		err = s.syncDir()
	}
	if err != nil {
		return fmt.Errorf("logstore: write meta: %w", err)
	}
	return nil
}

// syncFile flushes f: fdatasync for appends (the data and the size), a
// full fsync after a truncation or for meta.
func (s *Store) syncFile(f *os.File, full bool) error {
	if s.opts.NoSync {
		return nil
	}
	if full {
		return f.Sync()
	}
	return datasync(f)
}

// syncDir makes file creations, renames and removals in dir durable.
func (s *Store) syncDir() error {
	if s.opts.NoSync {
		return nil
	}
	d, err := os.Open(s.dir)
	if err != nil {
		return fmt.Errorf("logstore: sync dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("logstore: sync dir: %w", err)
	}
	return nil
}

// Close closes the segment files. Every entry StoreLogs acknowledged is
// already on disk.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.ring != nil {
		s.ring.close()
		s.ring = nil
	}
	return s.closeFiles()
}

func (s *Store) closeFiles() error {
	var errs []error
	for _, g := range s.segs {
		if g.f != nil {
			if err := g.f.Close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func segName(g *segment) string { return fmt.Sprintf(segNameFmt, g.id, g.base) }

func parseSegName(name string) (id, base uint64, ok bool) {
	stem := strings.TrimSuffix(name, segSuffix)
	a, b, found := strings.Cut(stem, "-")
	if !found || len(a) != 16 || len(b) != 20 {
		return 0, 0, false
	}
	id, err1 := strconv.ParseUint(a, 16, 64)
	base, err2 := strconv.ParseUint(b, 10, 64)
	return id, base, err1 == nil && err2 == nil && base > 0
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
