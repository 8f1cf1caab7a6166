//go:build !linux

package sip

import (
	"net"
	"syscall"
)

// batchReader reads one datagram at a time where recvmmsg is not wired up.
type batchReader struct {
	buf  []byte
	n    int
	from net.Addr
}

func newBatchReader(_, size int) *batchReader { return &batchReader{buf: make([]byte, size)} }

// readBatches reads the socket until it is closed or fails and gives each
// datagram to handle (false: stop).
func (r *batchReader) readBatches(c *udpConn, handle func(*batchReader, int) bool) error {
	for {
		var err error
		r.n, r.from, err = c.UDPConn.ReadFrom(r.buf)
		if err != nil {
			return err
		}
		if !handle(r, 1) {
			return nil
		}
	}
}

func (r *batchReader) datagram(int) ([]byte, net.Addr) { return r.buf[:r.n], r.from }

// socketFamily is not needed where writes are not batched.
func socketFamily(syscall.RawConn) int { return 0 }

// sockaddr is empty where the writes of a batch go out one by one.
type sockaddr struct{}

func (c *udpConn) sockaddr(net.Addr) sockaddr { return sockaddr{} }

// sendSys writes a batch's datagrams one by one: sendmmsg is Linux's.
type sendSys struct{}

func (sendSys) send(q []queuedWrite, buf []byte) {
	for i := range q {
		writeQueued(&q[i], buf)
	}
}

// sendTo writes b to to through the net package.
func (c *udpConn) sendTo(b []byte, to net.Addr) (int, error) { return c.UDPConn.WriteTo(b, to) }
