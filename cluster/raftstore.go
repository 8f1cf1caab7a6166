package cluster

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/sipdispatch/sipdispatch/cluster/logstore"
)

// In DataDir: raft.db (bbolt) keeps raft's term and vote, written only at
// elections; the log lives in logDir (cluster/logstore, one fdatasync per
// append). Data dirs from before logstore have their log in raft.db: it is
// moved once, at the first start.
const (
	boltFile   = "raft.db"
	logDir     = "raft-log"
	migrateDir = logDir + ".migrating"
	// migrateBatch bounds the entries copied per write during a migration.
	migrateBatch = 256
)

// raftStores are the stores a node hands raft.
type raftStores struct {
	stable *raftboltdb.BoltStore
	log    *logstore.Store
}

func (s raftStores) close() error {
	var errs []error
	if s.log != nil {
		if err := s.log.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	if s.stable != nil {
		if err := s.stable.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", boltFile, err))
		}
	}
	return errors.Join(errs...)
}

// openRaftStores opens raft.db and the log, moving a log still in raft.db
// into the log store first. snaps tells whether a gap in the old log is
// covered by a snapshot. On error nothing stays open.
func openRaftStores(dataDir string, noSync bool, snaps raft.SnapshotStore, log *slog.Logger) (raftStores, error) {
	var s raftStores
	var err error
	if s.stable, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dataDir, boltFile), NoSync: noSync}); err != nil {
		return s, fmt.Errorf("open %s: %w", boltFile, err)
	}
	opts := logstore.Options{NoSync: noSync, Logger: log}
	dir := filepath.Join(dataDir, logDir)
	if _, statErr := os.Stat(dir); errors.Is(statErr, os.ErrNotExist) {
		err = migrateBoltLog(s.stable, dataDir, opts, snaps, log)
	}
	if err == nil {
		// A crash after the migration's rename leaves the old copy in
		// raft.db: the log store is the log now, so it goes.
		err = dropBoltLog(s.stable)
	}
	if err == nil {
		s.log, err = logstore.Open(dir, opts)
	}
	if err != nil {
		s.close()
		return raftStores{}, fmt.Errorf("raft log: %w", err)
	}
	return s, nil
}

// migrateBoltLog copies the log entries of raft.db into a new log store,
// built beside the final directory and renamed into place once complete,
// so a crash midway leaves raft.db as it was and the next start redoes it.
// With an empty raft.db (a fresh data dir) it creates an empty log store.
func migrateBoltLog(bolt *raftboltdb.BoltStore, dataDir string, opts logstore.Options, snaps raft.SnapshotStore, log *slog.Logger) error {
	tmp := filepath.Join(dataDir, migrateDir)
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("remove unfinished migration: %w", err)
	}
	first, err := bolt.FirstIndex()
	if err != nil {
		return fmt.Errorf("read %s: %w", boltFile, err)
	}
	last, err := bolt.LastIndex()
	if err != nil {
		return fmt.Errorf("read %s: %w", boltFile, err)
	}
	// raft-boltdb holds a gap after a follower installed a snapshot past
	// its log (raft then appended after the snapshot). The log store has
	// no gaps: take the run that ends at last, and only if a snapshot
	// covers what lies before it.
	start := last
	for start > first && start > 0 {
		err := bolt.GetLog(start-1, new(raft.Log))
		if errors.Is(err, raft.ErrLogNotFound) {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s at %d: %w", boltFile, start-1, err)
		}
		start--
	}
	if last > 0 && start > first {
		metas, err := snaps.List()
		if err != nil {
			return fmt.Errorf("list snapshots: %w", err)
		}
		if len(metas) == 0 || metas[0].Index < start-1 {
			return fmt.Errorf("%s has a gap before index %d that no snapshot covers: not migrated, start the previous version or restore from a snapshot", boltFile, start)
		}
		log.Warn("cluster: raft.db log has a gap covered by the snapshot; migrating the entries after it",
			"first", first, "from", start, "snapshot_index", metas[0].Index)
	}
	s, err := logstore.Open(tmp, opts)
	if err != nil {
		return err
	}
	batch := make([]*raft.Log, 0, migrateBatch)
	for i := start; i <= last && last > 0; i++ {
		l := new(raft.Log)
		if err := bolt.GetLog(i, l); err != nil {
			s.Close()
			return fmt.Errorf("read %s at %d: %w", boltFile, i, err)
		}
		if batch = append(batch, l); len(batch) == migrateBatch || i == last {
			if err := s.StoreLogs(batch); err != nil {
				s.Close()
				return fmt.Errorf("migrate: %w", err)
			}
			batch = batch[:0]
		}
	}
	if err := s.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dataDir, logDir)); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if !opts.NoSync {
		if err := syncDir(dataDir); err != nil {
			return fmt.Errorf("migrate: %w", err)
		}
	}
	if last > 0 {
		log.Info("cluster: moved the raft log out of raft.db", "first", start, "last", last, "dir", logDir)
	}
	return nil
}

// dropBoltLog deletes whatever log entries raft.db still holds.
func dropBoltLog(bolt *raftboltdb.BoltStore) error {
	last, err := bolt.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	first, err := bolt.FirstIndex()
	if err != nil {
		return err
	}
	if err := bolt.DeleteRange(first, last); err != nil {
		return fmt.Errorf("delete the migrated log from %s: %w", boltFile, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
