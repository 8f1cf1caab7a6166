//go:build !linux

package logstore

import (
	"errors"
	"os"
)

// ring is io_uring, which only Linux has: elsewhere the store always
// uses plain pwrite and fsync.
type ring struct{}

func newRing() (*ring, error) { return nil, errors.New("io_uring: not on this system") }

func (*ring) writeSync(*os.File, []byte, int64) (werr, serr error) { return errRingBroken, nil }

func (*ring) close() {}

var (
	errRingBroken = errors.New("logstore: io_uring submission failed")
	errRingRedo   = errors.New("logstore: io_uring append incomplete")
)
