//go:build !unix

package cluster

import "os"

// lockDataDir is a no-op where flock is unavailable; bbolt's own lock on
// raft.db still keeps a second node out (by waiting).
func lockDataDir(dir string) (*os.File, error) { return nil, nil }
