//go:build !linux

package actors

import (
	"errors"
	"os"
)

// Without fallocate a mapped file could fault on a full disk: plain writes.
func mapFile(*os.File, int64, int64) ([]byte, error) {
	return nil, errors.New("not mapped on this system")
}

func remapFile(*os.File, []byte, int64) ([]byte, error) {
	return nil, errors.New("not mapped on this system")
}

func unmapFile([]byte) {}
