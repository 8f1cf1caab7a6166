package logstore

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring appends to a segment and fdatasyncs it through io_uring, so that
// the Go scheduler never sees a system call: a pwrite and an fdatasync made
// the usual way wake the runtime's sysmon thread whenever the process had
// gone idle, and sysmon then polls every 20 µs for a millisecond — a large
// part of a lightly loaded node's CPU on a virtual machine
// (docs/benchmarks.md, "… the raft log through io_uring, …"). The write and
// the fdatasync are submitted as one linked pair with a raw io_uring_enter;
// the kernel runs them on its own worker thread and signals an eventfd that
// the caller waits on in the netpoller, without holding a P — so a stalled
// disk blocks only the commit that waits for it, never the garbage
// collector's stop-the-world (which a raw fdatasync would hold up).
//
// One caller at a time (the Store's wmu); each call waits for all its
// completions, so the two submission slots are free again when it returns.
type ring struct {
	fd  int
	efd *os.File // eventfd registered with the ring, non-blocking, in the netpoller
	rc  syscall.RawConn

	rings, sqeMem []byte // mmaps: SQ and CQ rings (one mapping), SQE array

	sqTail  *uint32
	sqMask  uint32
	sqArray []uint32
	sqes    []sqe
	cqHead  *uint32
	cqTail  *uint32
	cqMask  uint32
	cqes    []cqe
}

// The kernel's io_uring ABI (include/uapi/linux/io_uring.h).
const (
	ringEntries = 4

	opWrite = 23 // IORING_OP_WRITE
	opFsync = 3  // IORING_OP_FSYNC

	sqeIOLink     = 1 << 2 // IOSQE_IO_LINK: the next SQE starts once this one succeeded
	fsyncDatasync = 1      // IORING_FSYNC_DATASYNC

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP

	offSQRing = 0
	offSQEs   = 0x10000000

	registerEventfd = 4 // IORING_REGISTER_EVENTFD

	udWrite = 1 // user_data of the write; the fdatasync's is udSync
	udSync  = 2
)

type sqRingOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqRingOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type ringParams struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqRingOffsets
	cqOff                                                                  cqRingOffsets
}

type sqe struct {
	opcode      uint8
	flags       uint8
	ioprio      uint16
	fd          int32
	off         uint64
	addr        uint64
	len         uint32
	opFlags     uint32
	userData    uint64
	bufIndex    uint16
	personality uint16
	spliceFdIn  int32
	addr3       uint64
	_           uint64
}

type cqe struct {
	userData uint64
	res      int32
	flags    uint32
}

// newRing sets up a ring; an error means io_uring is not available here
// (an old kernel, kernel.io_uring_disabled, a container's seccomp policy)
// and the caller uses plain system calls.
func newRing() (r *ring, err error) {
	var p ringParams
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, ringEntries, uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r = &ring{fd: int(fd)}
	defer func() {
		if err != nil {
			r.close()
		}
	}()
	if p.features&featSingleMmap == 0 {
		return nil, errors.New("io_uring: kernel without IORING_FEAT_SINGLE_MMAP (before 5.4)")
	}
	size := max(int(p.sqOff.array)+int(p.sqEntries)*4, int(p.cqOff.cqes)+int(p.cqEntries)*int(unsafe.Sizeof(cqe{})))
	if r.rings, err = unix.Mmap(r.fd, offSQRing, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("io_uring: mmap rings: %w", err)
	}
	if r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(sqe{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("io_uring: mmap SQEs: %w", err)
	}
	base := unsafe.Pointer(&r.rings[0])
	at := func(off uint32) *uint32 { return (*uint32)(unsafe.Add(base, off)) }
	r.sqTail = at(p.sqOff.tail)
	r.sqMask = *at(p.sqOff.ringMask)
	r.sqArray = unsafe.Slice(at(p.sqOff.array), p.sqEntries)
	r.sqes = unsafe.Slice((*sqe)(unsafe.Pointer(&r.sqeMem[0])), p.sqEntries)
	r.cqHead = at(p.cqOff.head)
	r.cqTail = at(p.cqOff.tail)
	r.cqMask = *at(p.cqOff.ringMask)
	r.cqes = unsafe.Slice((*cqe)(unsafe.Add(base, p.cqOff.cqes)), p.cqEntries)

	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("io_uring: eventfd: %w", err)
	}
	r.efd = os.NewFile(uintptr(efd), "io_uring-eventfd")
	if r.rc, err = r.efd.SyscallConn(); err != nil {
		return nil, fmt.Errorf("io_uring: eventfd: %w", err)
	}
	e := int32(efd)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerEventfd, uintptr(unsafe.Pointer(&e)), 1, 0, 0); errno != 0 {
		return nil, fmt.Errorf("io_uring: register eventfd: %w", errno)
	}
	return r, nil
}

// writeSync writes b at off of f and, when the write succeeded in full,
// fdatasyncs f. werr is the write's error, serr the fdatasync's. A ring
// that fails to submit is closed and says errRingBroken; a short write or
// an EINTR/EAGAIN result says errRingRedo: the caller does this append
// with plain calls.
func (r *ring) writeSync(f *os.File, b []byte, off int64) (werr, serr error) {
	fd := int32(f.Fd())
	tail := *r.sqTail // only this goroutine moves the tail
	r.sqes[0] = sqe{opcode: opWrite, flags: sqeIOLink, fd: fd, off: uint64(off),
		addr: uint64(uintptr(unsafe.Pointer(unsafe.SliceData(b)))), len: uint32(len(b)), userData: udWrite}
	r.sqes[1] = sqe{opcode: opFsync, fd: fd, opFlags: fsyncDatasync, userData: udSync}
	r.sqArray[tail&r.sqMask] = 0
	r.sqArray[(tail+1)&r.sqMask] = 1
	atomic.StoreUint32(r.sqTail, tail+2)
	for {
		// Raw: no P hand-off and no sysmon wake-up; the call only queues the
		// two requests (the write of a buffered ext4 file is punted to a
		// kernel worker at once).
		n, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 2, 0, 0, 0, 0)
		if errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.EBUSY {
			continue
		}
		if errno != 0 || n != 2 {
			// Requests left queued must never run later with stale bytes.
			r.close()
			return errRingBroken, nil
		}
		break
	}
	var wres, sres int32
	for got := 0; got < 2; {
		head := *r.cqHead
		for ; head != atomic.LoadUint32(r.cqTail); head++ {
			c := r.cqes[head&r.cqMask]
			if c.userData == udWrite {
				wres = c.res
			} else {
				sres = c.res
			}
			got++
		}
		atomic.StoreUint32(r.cqHead, head)
		if got < 2 {
			r.waitEvent(2 - got)
		}
	}
	runtime.KeepAlive(b) // the kernel read it until the write completed
	runtime.KeepAlive(f) // and used its descriptor
	again := func(res int32) bool { return res == -int32(unix.EINTR) || res == -int32(unix.EAGAIN) }
	switch {
	case again(wres), again(sres), wres >= 0 && int(wres) < len(b):
		// Not a failure of the file (a short write breaks the link and
		// cancels the fdatasync): the caller redoes both the plain way.
		return errRingRedo, nil
	case wres < 0:
		return syscall.Errno(-wres), nil
	case sres < 0:
		return nil, syscall.Errno(-sres)
	}
	return nil, nil
}

var (
	// errRingBroken: io_uring_enter failed; nothing was written by this call.
	errRingBroken = errors.New("logstore: io_uring submission failed")
	// errRingRedo: the requests ran but did not finish the append.
	errRingRedo = errors.New("logstore: io_uring append incomplete")
)

// waitEvent parks the goroutine in the netpoller until the eventfd counts a
// completion, reading it with a raw read (EAGAIN means not yet). Should the
// poller fail, it waits for the n missing completions in io_uring_enter
// instead, a blocking call the scheduler sees.
func (r *ring) waitEvent(n int) {
	var v uint64
	err := r.rc.Read(func(fd uintptr) bool {
		_, _, errno := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&v)), 8)
		return errno != unix.EAGAIN
	})
	if err != nil {
		const getEvents = 1 // IORING_ENTER_GETEVENTS
		unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 0, uintptr(n), getEvents, 0, 0)
	}
}

// close releases the ring; safe on a half-built one and more than once.
func (r *ring) close() {
	if r.fd >= 0 {
		unix.Close(r.fd) // cancels nothing in flight: callers always wait for their completions
		r.fd = -1
	}
	if r.efd != nil {
		r.efd.Close()
		r.efd = nil
	}
	for _, m := range [][]byte{r.rings, r.sqeMem} {
		if m != nil {
			unix.Munmap(m)
		}
	}
	r.rings, r.sqeMem = nil, nil
}
