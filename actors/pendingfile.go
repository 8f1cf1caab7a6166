package actors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// pendingStore keeps the load queue in a file so that a node killed with
// commands still pending (cut off from the leader, or in an election)
// proposes them again when it restarts. Nothing is fsynced: the page cache
// survives the death of the process, which is the failure this guards
// against, and a BYE does not wait for a disk. After a crash of the whole
// machine the expiry sweep is the bound.
//
// On Linux the file is preallocated and mapped, and a change is a copy
// into the mapping — no system call: a write(2) per change, 3–4 per call,
// woke the Go runtime's sysmon thread whenever the process had been idle
// (docs/benchmarks.md, "… the raft log through io_uring, …"). Elsewhere, or
// when the file cannot be mapped, each change is one write(2).
//
// The file is a sequence of records: a uvarint length, then 'P' (pending),
// the deadline in unix nanoseconds (8 bytes, big endian) and an encoded
// dispatch.Command, or 'D' (done) and the encoded command; zero bytes (a
// length of 0, the mapped file's free space) end it. A torn last record,
// as a crash mid-write leaves, ends the replay.
type pendingStore struct {
	path string
	log  *slog.Logger

	f         *os.File // nil once writing failed: memory only from then on
	m         []byte   // f mapped: records are copied in at size
	size      int64    // bytes of records
	compactAt int64
	buf       []byte
}

// storedLoad is a pending command read back from the file.
type storedLoad struct {
	c     dispatch.Command
	until time.Time
}

const (
	recPending      = 'P'
	recDone         = 'D'
	pendingMinBytes = 1 << 20 // compaction threshold when the queue is small
	maxPendingRec   = 1 << 20 // a longer record is damage, not a command
)

// openPendingStore opens (creating) the file at path and returns the
// commands it still lists as pending, whose deadline has not passed.
func openPendingStore(path string, now time.Time, log *slog.Logger) (*pendingStore, []storedLoad, error) {
	live, err := readPending(path)
	if err != nil {
		return nil, nil, err
	}
	out := make([]storedLoad, 0, len(live))
	for _, l := range live {
		if now.Before(l.until) {
			out = append(out, l)
		}
	}
	s := &pendingStore{path: path, log: log}
	if err := s.rewrite(out); err != nil {
		return nil, nil, err
	}
	return s, out, nil
}

type storeKey struct {
	callID string
	kind   dispatch.CommandKind
	at     int64
}

// readPending replays the file; a missing file is an empty queue.
func readPending(path string) ([]storedLoad, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pending load commands: %w", err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	live := map[storeKey]storedLoad{}
	var order []storeKey
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil || n < 1 || n > maxPendingRec {
			break // the end, or a torn record
		}
		rec := make([]byte, n)
		if _, err := io.ReadFull(r, rec); err != nil {
			break
		}
		op, body := rec[0], rec[1:]
		var until int64
		if op == recPending {
			if len(body) < 8 {
				break
			}
			until, body = int64(binary.BigEndian.Uint64(body)), body[8:]
		}
		c, err := dispatch.DecodeCommand(body)
		if err != nil {
			break
		}
		k := storeKey{c.CallID, c.Kind, c.At}
		switch op {
		case recPending:
			if _, ok := live[k]; !ok {
				order = append(order, k)
			}
			live[k] = storedLoad{c: c, until: time.Unix(0, until)}
		case recDone:
			delete(live, k)
		default:
			return listLive(live, order), nil
		}
	}
	return listLive(live, order), nil
}

func listLive(live map[storeKey]storedLoad, order []storeKey) []storedLoad {
	out := make([]storedLoad, 0, len(live))
	for _, k := range order {
		if l, ok := live[k]; ok {
			out = append(out, l)
			delete(live, k)
		}
	}
	return out
}

func (s *pendingStore) put(c dispatch.Command, until time.Time) {
	s.write(recPending, c, until)
}

func (s *pendingStore) done(c dispatch.Command) {
	s.write(recDone, c, time.Time{})
}

func (s *pendingStore) write(op byte, c dispatch.Command, until time.Time) {
	if s.f == nil {
		return
	}
	b, err := dispatch.EncodeCommand(c)
	if err == nil {
		s.buf = appendRecord(s.buf[:0], op, until, b)
		if s.m != nil {
			err = s.store(s.buf)
		} else {
			var n int
			n, err = s.f.Write(s.buf)
			s.size += int64(n)
		}
	}
	if err != nil {
		s.log.Warn("pending load commands: writing the file failed; they are kept in memory only from now on",
			"file", s.path, "err", err)
		s.close()
	}
}

// store copies rec into the mapping after the last record, growing the
// file when it is full. Its first byte goes in last: until then the record
// reads as the end of the file, so a process killed mid-copy leaves no
// torn record behind.
func (s *pendingStore) store(rec []byte) error {
	if end := s.size + int64(len(rec)); end > int64(len(s.m)) {
		m, err := remapFile(s.f, s.m, 2*end)
		if err != nil {
			return err
		}
		s.m = m
	}
	dst := s.m[s.size : s.size+int64(len(rec))]
	copy(dst[1:], rec[1:])
	dst[0] = rec[0]
	s.size += int64(len(rec))
	return nil
}

func appendRecord(dst []byte, op byte, until time.Time, cmd []byte) []byte {
	n := 1 + len(cmd)
	if op == recPending {
		n += 8
	}
	dst = binary.AppendUvarint(dst, uint64(n))
	dst = append(dst, op)
	if op == recPending {
		dst = binary.BigEndian.AppendUint64(dst, uint64(until.UnixNano()))
	}
	return append(dst, cmd...)
}

// compact rewrites the file with only the live commands once it has grown
// past its threshold.
func (s *pendingStore) compact(live []storedLoad) {
	if s.f == nil || s.size < s.compactAt {
		return
	}
	if err := s.rewrite(live); err != nil {
		s.log.Warn("pending load commands: compacting the file failed; they are kept in memory only from now on",
			"file", s.path, "err", err)
	}
}

// rewrite replaces the file with live, atomically, and appends after it.
func (s *pendingStore) rewrite(live []storedLoad) error {
	s.close()
	tmp := s.path + ".tmp"
	var buf []byte
	for _, l := range live {
		b, err := dispatch.EncodeCommand(l.c)
		if err != nil {
			return fmt.Errorf("pending load commands: %w", err)
		}
		buf = appendRecord(buf, recPending, l.until, b)
	}
	if err := os.WriteFile(tmp, buf, 0o600); err != nil {
		return fmt.Errorf("pending load commands: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("pending load commands: %w", err)
	}
	f, err := os.OpenFile(s.path, os.O_RDWR|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("pending load commands: %w", err)
	}
	s.f, s.size = f, int64(len(buf))
	s.compactAt = max(pendingMinBytes, 4*s.size)
	// Room for twice the compaction threshold: the sweep compacts long
	// before the mapping has to grow.
	if s.m, err = mapFile(f, s.size, 2*s.compactAt); err != nil {
		s.log.Info("pending load commands: one write per change", "file", s.path, "reason", err)
	}
	return nil
}

func (s *pendingStore) close() {
	if s == nil {
		return
	}
	if s.m != nil {
		unmapFile(s.m)
		s.m = nil
	}
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
