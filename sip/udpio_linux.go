package sip

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// batchReader reads up to len(hdrs) datagrams with one recvmmsg.
type batchReader struct {
	hdrs  []unix.Mmsghdr
	iovs  []unix.Iovec
	bufs  [][]byte
	names [][unix.SizeofSockaddrAny]byte
	// addrs keeps the net.Addr of each recent sender, so that a datagram
	// does not allocate one; its values are never changed.
	addrs map[netip.AddrPort]*net.UDPAddr
}

// maxCachedAddrs bounds batchReader.addrs; a full cache starts over.
const maxCachedAddrs = 4096

func newBatchReader(n, size int) *batchReader {
	r := &batchReader{
		hdrs:  make([]unix.Mmsghdr, n),
		iovs:  make([]unix.Iovec, n),
		bufs:  make([][]byte, n),
		names: make([][unix.SizeofSockaddrAny]byte, n),
		addrs: make(map[netip.AddrPort]*net.UDPAddr),
	}
	for i := range n {
		r.bufs[i] = make([]byte, size)
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(size)
		r.hdrs[i].Hdr.Iov = &r.iovs[i]
		r.hdrs[i].Hdr.SetIovlen(1)
		r.hdrs[i].Hdr.Name = &r.names[i][0]
	}
	return r
}

// readBatches reads the socket until it is closed or fails, a batch of
// datagrams at a time, and gives each batch to handle (false: stop). It
// stays in one RawConn.Read, so that after a batch that emptied the queue
// (recvmmsg returned fewer than it could take) it waits in the netpoller
// straight away: a read that would only find nothing (EAGAIN) costs a
// syscall per wake-up. The readiness an arrival leaves in the netpoller is
// only cleared when a new Read begins, so no datagram waits unseen.
func (r *batchReader) readBatches(c *udpConn, handle func(*batchReader, int) bool) error {
	var rerr error
	err := c.raw.Read(func(fd uintptr) bool {
		for {
			for i := range r.hdrs {
				r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrAny
			}
			n, _, e := unix.RawSyscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_WAITFORONE, 0, 0)
			switch e {
			case 0:
			case unix.EINTR:
				continue
			case unix.EAGAIN:
				return false
			default:
				rerr = e
				return true
			}
			if !handle(r, int(n)) {
				return true
			}
			if int(n) < len(r.hdrs) {
				return false
			}
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// datagram returns the i-th datagram of the last read and its sender.
func (r *batchReader) datagram(i int) ([]byte, net.Addr) {
	h := &r.hdrs[i]
	return r.bufs[i][:h.Len], r.sender(r.names[i][:h.Hdr.Namelen])
}

// sender decodes a sockaddr_in or sockaddr_in6.
func (r *batchReader) sender(sa []byte) net.Addr {
	var ap netip.AddrPort
	var zone uint32
	switch {
	case len(sa) >= unix.SizeofSockaddrInet4 && binary.NativeEndian.Uint16(sa) == unix.AF_INET:
		ap = netip.AddrPortFrom(netip.AddrFrom4([4]byte(sa[4:8])), binary.BigEndian.Uint16(sa[2:4]))
	case len(sa) >= unix.SizeofSockaddrInet6 && binary.NativeEndian.Uint16(sa) == unix.AF_INET6:
		ap = netip.AddrPortFrom(netip.AddrFrom16([16]byte(sa[8:24])), binary.BigEndian.Uint16(sa[2:4]))
		zone = binary.NativeEndian.Uint32(sa[24:28])
	default:
		return &net.UDPAddr{}
	}
	if a, ok := r.addrs[ap]; ok && zone == 0 {
		return a
	}
	a := net.UDPAddrFromAddrPort(ap)
	if zone != 0 {
		a.Zone = strconv.FormatUint(uint64(zone), 10)
		if ifc, err := net.InterfaceByIndex(int(zone)); err == nil {
			a.Zone = ifc.Name
		}
		return a
	}
	if len(r.addrs) >= maxCachedAddrs {
		clear(r.addrs)
	}
	r.addrs[ap] = a
	return a
}

// socketFamily is the socket's address family (SO_DOMAIN), which decides
// how a destination is encoded for sendmmsg: an IPv4 address goes to an
// AF_INET6 socket (Go's dual-stack wildcard listener) IPv4-mapped.
func socketFamily(raw syscall.RawConn) int {
	family := 0
	raw.Control(func(fd uintptr) {
		family, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	})
	return family
}

// sockaddr is a queued write's destination as the kernel takes it; n 0
// when sockaddr could not encode it, and the write goes out on its own
// through WriteTo.
type sockaddr struct {
	b [unix.SizeofSockaddrInet6]byte
	n uint32
}

// sockaddr encodes to for c's socket: sockaddr_in for an IPv4 address on
// an AF_INET socket, else sockaddr_in6 (an IPv6 address on an AF_INET
// socket fails in the kernel, as WriteTo fails). A zone (a scope id to look
// up) or anything but a *net.UDPAddr is left to WriteTo.
func (c *udpConn) sockaddr(to net.Addr) (sa sockaddr) {
	a, ok := to.(*net.UDPAddr)
	if !ok || a.Zone != "" || a.Port < 0 || a.Port > 0xffff {
		return sa
	}
	if ip4 := a.IP.To4(); ip4 != nil && c.family == unix.AF_INET {
		binary.NativeEndian.PutUint16(sa.b[0:2], unix.AF_INET)
		binary.BigEndian.PutUint16(sa.b[2:4], uint16(a.Port))
		copy(sa.b[4:8], ip4)
		sa.n = unix.SizeofSockaddrInet4
		return sa
	}
	if ip16 := a.IP.To16(); ip16 != nil {
		binary.NativeEndian.PutUint16(sa.b[0:2], unix.AF_INET6)
		binary.BigEndian.PutUint16(sa.b[2:4], uint16(a.Port))
		copy(sa.b[8:24], ip16)
		sa.n = unix.SizeofSockaddrInet6
	}
	return sa
}

// sendSys holds the sendmmsg headers, reused from batch to batch.
type sendSys struct {
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
}

// send writes q, in order: each run of writes to one socket with one
// sendmmsg (more when the kernel takes only part), a write sockaddr could
// not encode on its own. It sets each failed write's err.
func (s *sendSys) send(q []queuedWrite, buf []byte) {
	for i := 0; i < len(q); {
		if q[i].sa.n == 0 {
			writeQueued(&q[i], buf)
			i++
			continue
		}
		j := i + 1
		for j < len(q) && q[j].c == q[i].c && q[j].sa.n != 0 {
			j++
		}
		s.sendRun(q[i:j], buf)
		i = j
	}
}

// sendRun sends run, writes to one socket, with sendmmsg. The kernel sends
// a prefix and says how many; when a datagram fails after others went
// out, the next call starts with it and returns its error, which goes to
// that write alone and the rest are sent. A full send buffer (EAGAIN)
// waits in the netpoller (RawConn.Write) until the socket is writable.
func (s *sendSys) sendRun(run []queuedWrite, buf []byte) {
	if cap(s.hdrs) < len(run) {
		s.hdrs = make([]unix.Mmsghdr, len(run))
		s.iovs = make([]unix.Iovec, len(run))
	}
	hdrs, iovs := s.hdrs[:len(run)], s.iovs[:len(run)]
	for k := range run {
		w := &run[k]
		iovs[k] = unix.Iovec{}
		if w.n > 0 {
			iovs[k].Base = &buf[w.off]
			iovs[k].SetLen(w.n)
		}
		hdrs[k] = unix.Mmsghdr{}
		hdrs[k].Hdr.Name = &w.sa.b[0]
		hdrs[k].Hdr.Namelen = w.sa.n
		hdrs[k].Hdr.Iov = &iovs[k]
		hdrs[k].Hdr.SetIovlen(1)
	}
	c := run[0].c
	i := 0
	err := c.raw.Write(func(fd uintptr) bool {
		for i < len(run) {
			n, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&hdrs[i])), uintptr(len(run)-i), 0, 0, 0)
			switch {
			case e == unix.EINTR:
			case e == unix.EAGAIN:
				return false
			case e != 0:
				run[i].err = &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: run[i].to, Err: os.NewSyscallError("sendmmsg", e)}
				i++
			case n == 0:
				run[i].err = io.ErrShortWrite // not seen: the kernel sends one or fails
				i++
			default:
				i += int(n)
			}
		}
		return true
	})
	clear(hdrs) // no pointers into this batch kept
	clear(iovs)
	for ; err != nil && i < len(run); i++ {
		run[i].err = err // the socket is closed
	}
}

// sendTo writes b to to with one sendto. Like recvmmsg and sendmmsg above it
// is a raw system call, which the Go scheduler does not see: the socket is
// non-blocking, so the call never waits (a full buffer gives EAGAIN, and
// RawConn.Write waits in the netpoller), and a system call the scheduler
// sees wakes its monitor thread (sysmon) when that sleeps, which then polls
// every 20 µs for a while — at light load a measurable part of a call's CPU
// (docs/benchmarks.md). What sockaddr cannot encode goes through the net
// package.
func (c *udpConn) sendTo(b []byte, to net.Addr) (int, error) {
	sa := c.sockaddr(to)
	if sa.n == 0 || len(b) == 0 {
		return c.UDPConn.WriteTo(b, to)
	}
	var n uintptr
	var e unix.Errno
	err := c.raw.Write(func(fd uintptr) bool {
		for {
			n, _, e = unix.RawSyscall6(unix.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0,
				uintptr(unsafe.Pointer(&sa.b[0])), uintptr(sa.n))
			if e != unix.EINTR {
				return e != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if e != 0 {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: c.LocalAddr(), Addr: to, Err: os.NewSyscallError("sendto", e)}
	}
	return int(n), nil
}
