//go:build !linux

package logstore

import "os"

// datasync flushes f; outside Linux that is a full fsync.
func datasync(f *os.File) error { return f.Sync() }
