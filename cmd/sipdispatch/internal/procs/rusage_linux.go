package procs

import (
	"syscall"
	"time"
	"unsafe"
)

// cpuTime is the user+system CPU time this process has used so far.
// getrusage never blocks, so it is a raw system call: one the scheduler
// sees would wake the runtime's sysmon thread, ten times a second, into
// a millisecond of 20 µs polls each time the process was idle.
func cpuTime() (time.Duration, error) {
	var ru syscall.Rusage
	if _, _, errno := syscall.RawSyscall(syscall.SYS_GETRUSAGE, syscall.RUSAGE_SELF, uintptr(unsafe.Pointer(&ru)), 0); errno != 0 {
		return 0, errno
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), nil
}
