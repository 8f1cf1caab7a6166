package actors

import (
	"fmt"
	"os"
	"syscall"
)

// mapFile preallocates f to size bytes (its first used bytes are records)
// and maps it shared. Preallocation is what makes stores into the mapping
// safe: a page the file system still had to allocate could fail with
// ENOSPC, which a mapping reports as SIGBUS. On an error f is cut back to
// its records, for plain writes after them.
func mapFile(f *os.File, used, size int64) ([]byte, error) {
	m, err := mapSized(f, size)
	if err != nil {
		if terr := f.Truncate(used); terr != nil {
			return nil, fmt.Errorf("%w (and truncating back: %v)", err, terr)
		}
		return nil, err
	}
	return m, nil
}

// remapFile grows f's preallocation to size and maps it anew.
func remapFile(f *os.File, old []byte, size int64) ([]byte, error) {
	m, err := mapSized(f, size)
	if err != nil {
		return nil, err
	}
	unmapFile(old)
	return m, nil
}

func mapSized(f *os.File, size int64) ([]byte, error) {
	fd := int(f.Fd())
	if err := syscall.Fallocate(fd, 0, 0, size); err != nil {
		return nil, fmt.Errorf("fallocate: %w", err)
	}
	m, err := syscall.Mmap(fd, 0, int(size), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return m, nil
}

func unmapFile(m []byte) { _ = syscall.Munmap(m) }
