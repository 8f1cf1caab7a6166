//go:build !linux

package sip

import "net"

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
