package sip

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strconv"
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
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	err = raw.Read(func(fd uintptr) bool {
		for {
			for i := range r.hdrs {
				r.hdrs[i].Hdr.Namelen = unix.SizeofSockaddrAny
			}
			n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(len(r.hdrs)), unix.MSG_WAITFORONE, 0, 0)
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
