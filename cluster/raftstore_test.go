package cluster

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/sipdispatch/sipdispatch/cluster/logstore"
)

// A node restarts from a snapshot plus the log left after compaction.
func TestRestartAfterSnapshotAndCompaction(t *testing.T) {
	cfg := standaloneConfig(t, "solo", t.TempDir())
	cfg.TrailingLogs = 5
	a := startNode(t, cfg)
	waitSoloLeader(t, a)
	for i := range 30 {
		propose(t, a, fmt.Sprintf("cmd-%d", i%4))
	}
	if err := a.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if first, _ := a.stores.log.FirstIndex(); first <= 1 {
		t.Fatalf("first log index %d after the snapshot: not compacted", first)
	}
	for i := range 10 {
		propose(t, a, fmt.Sprintf("cmd-%d", i%4))
	}
	want := a.app.state()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	b := restartSolo(t, cfg)
	if got := b.app.state(); got.N != want.N || got.Hash != want.Hash {
		t.Fatalf("after restart: %+v, want %+v", got, want)
	}
	if got := propose(t, b, "cmd-1"); got != want.Counts["cmd-1"]+1 {
		t.Fatalf("count after restart %d, want %d", got, want.Counts["cmd-1"]+1)
	}
}

// moveLogToBolt turns a closed node's data dir into the layout of earlier
// versions: the log in raft.db, no raft-log directory.
func moveLogToBolt(t *testing.T, dataDir string) (first, last uint64) {
	t.Helper()
	ls, err := logstore.Open(filepath.Join(dataDir, logDir), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, boltFile)})
	if err != nil {
		t.Fatal(err)
	}
	first, _ = ls.FirstIndex()
	last, _ = ls.LastIndex()
	for i := first; i <= last; i++ {
		l := new(raft.Log)
		if err := ls.GetLog(i, l); err != nil {
			t.Fatal(err)
		}
		if err := bolt.StoreLog(l); err != nil {
			t.Fatal(err)
		}
	}
	ls.Close()
	bolt.Close()
	if err := os.RemoveAll(filepath.Join(dataDir, logDir)); err != nil {
		t.Fatal(err)
	}
	return first, last
}

func boltLogRange(t *testing.T, dataDir string) (uint64, uint64) {
	t.Helper()
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, boltFile)})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	first, _ := bolt.FirstIndex()
	last, _ := bolt.LastIndex()
	return first, last
}

// A node upgraded on a data dir whose log is in raft.db keeps every
// committed command: the log moves into raft-log/ at the first start (an
// interrupted earlier attempt is redone) and raft.db keeps only term and vote.
func TestUpgradeMovesBoltLog(t *testing.T) {
	dir := t.TempDir()
	cfg := standaloneConfig(t, "solo", dir)
	a := startNode(t, cfg)
	waitSoloLeader(t, a)
	for i := range 25 {
		propose(t, a, fmt.Sprintf("cmd-%d", i%3))
	}
	want := a.app.state()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	first, last := moveLogToBolt(t, dir)
	if last < 25 {
		t.Fatalf("old layout holds %d..%d, want at least 25 entries", first, last)
	}
	// A migration that a crash interrupted left a partial copy.
	if err := os.MkdirAll(filepath.Join(dir, migrateDir), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, migrateDir, "0000000000000000-00000000000000000001.seg"), []byte("sdw"), 0o640); err != nil {
		t.Fatal(err)
	}

	b := restartSolo(t, cfg)
	if got := b.app.state(); got.N != want.N || got.Hash != want.Hash {
		t.Fatalf("after the upgrade: %+v, want %+v", got, want)
	}
	if f, _ := b.stores.log.FirstIndex(); f != first {
		t.Errorf("log store starts at %d, raft.db did at %d", f, first)
	}
	if got := propose(t, b, "cmd-0"); got != want.Counts["cmd-0"]+1 {
		t.Fatalf("count after the upgrade %d, want %d", got, want.Counts["cmd-0"]+1)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, migrateDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left behind: %v", migrateDir, err)
	}
	if f, l := boltLogRange(t, dir); f != 0 || l != 0 {
		t.Errorf("raft.db still holds log entries %d..%d", f, l)
	}
	c := restartSolo(t, cfg)
	if got := c.app.state(); got.N != want.N+1 {
		t.Fatalf("second start after the upgrade applied %d commands, want %d", got.N, want.N+1)
	}
}

// A crash after the migrated log was renamed into place but before raft.db
// was emptied: the log store wins and raft.db's copy is dropped.
func TestUpgradeFinishesAfterRename(t *testing.T) {
	dir := t.TempDir()
	snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile)})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 10; i++ {
		if err := bolt.StoreLog(&raft.Log{Index: i, Term: 1, Data: []byte("old")}); err != nil {
			t.Fatal(err)
		}
	}
	bolt.Close()
	ls, err := logstore.Open(filepath.Join(dir, logDir), logstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 12; i++ { // went on after the migration
		if err := ls.StoreLog(&raft.Log{Index: i, Term: 2, Data: []byte("new")}); err != nil {
			t.Fatal(err)
		}
	}
	ls.Close()
	s, err := openRaftStores(dir, false, snaps, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := s.log.GetLog(12, &l); err != nil || l.Term != 2 {
		t.Fatalf("log entry 12: %+v, %v", l, err)
	}
	s.close()
	if f, l := boltLogRange(t, dir); f != 0 || l != 0 {
		t.Errorf("raft.db still holds log entries %d..%d", f, l)
	}
}

// raft-boltdb may hold a gap (a follower that installed a snapshot past its
// log): the entries after it move when a snapshot covers the gap; without
// one the start is refused rather than guessing.
func TestUpgradeGapInBoltLog(t *testing.T) {
	for _, snapshot := range []bool{false, true} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			dir := t.TempDir()
			snaps, err := raft.NewFileSnapshotStore(dir, 1, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, boltFile)})
			if err != nil {
				t.Fatal(err)
			}
			for _, i := range []uint64{1, 2, 3, 10, 11, 12} {
				if err := bolt.StoreLog(&raft.Log{Index: i, Term: 1}); err != nil {
					t.Fatal(err)
				}
			}
			bolt.Close()
			if snapshot {
				sink, err := snaps.Create(raft.SnapshotVersionMax, 9, 1, raft.Configuration{}, 1, nil)
				if err != nil {
					t.Fatal(err)
				}
				sink.Write([]byte("x"))
				if err := sink.Close(); err != nil {
					t.Fatal(err)
				}
			}
			s, err := openRaftStores(dir, false, snaps, slog.New(slog.DiscardHandler))
			if !snapshot {
				if err == nil || !strings.Contains(err.Error(), "gap before index 10") {
					t.Fatalf("gap without a snapshot: %v", err)
				}
				if f, l := boltLogRange(t, dir); f != 1 || l != 12 {
					t.Errorf("refused migration changed raft.db: %d..%d", f, l)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.close()
			f, _ := s.log.FirstIndex()
			l, _ := s.log.LastIndex()
			if f != 10 || l != 12 {
				t.Fatalf("migrated %d..%d, want 10..12", f, l)
			}
		})
	}
}
