package sip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"

	sipmsg "github.com/emiago/sipgo/sip"
)

// udpHook handles a datagram a UDP listener read, on that listener's read
// loop, before sipgo sees it (the signature of sipgo's transport read
// filter): it returns nil when it has dealt with the datagram, and may then
// have rewritten it in place (the byte relay), else the bytes to hand to
// sipgo. Stateless mode's is statelessRead.
type udpHook = sipmsg.TransportReadFilter

// udpBatch is how many datagrams one read takes off a socket at most
// (recvmmsg on Linux).
const udpBatch = 8

// udpConn is one UDP listening socket, which sipgo serves as its listener
// (sipgo.Server.ServeUDP). With a hook, a read loop of our own (serve)
// takes the datagrams off the socket in batches, gives each to the hook on
// the loop itself and passes what the hook hands back to sipgo, which gets
// it from ReadFrom: a stateless proxy handles a datagram without waking a
// second goroutine, and reads batches (docs/benchmarks.md, "Batched UDP
// reads"). Without a hook sipgo reads the socket itself through ReadFrom:
// the hand-over to its goroutine would only add a wake-up per datagram.
// Writes — ours and sipgo's — go straight to the socket.
type udpConn struct {
	*net.UDPConn // the socket: writes, local address, buffers

	hook udpHook // nil: no loop of ours, sipgo reads the socket
	tap  Tap     // nil: no capture

	back chan []datagram // batches handed back to sipgo, in read order
	rest []datagram      // ReadFrom's current batch; sipgo's one read goroutine owns it

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	closeErr  error
}

// datagram is one datagram handed back to sipgo.
type datagram struct {
	data []byte
	from net.Addr
}

// newUDPConn wraps pc, a bound UDP socket, for serve.
func newUDPConn(pc net.PacketConn) (*udpConn, error) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("udp listener %v: not a UDP socket", pc.LocalAddr())
	}
	return &udpConn{UDPConn: uc, back: make(chan []datagram, 64), done: make(chan struct{})}, nil
}

// serve reads the socket until Close (only with a hook): each datagram
// goes to the tap, then the hook; what the hook hands back goes to sipgo as one batch per read,
// so that sipgo's reader is woken once per batch, not per datagram.
func (c *udpConn) serve() error {
	r := newBatchReader(udpBatch, int(sipmsg.TransportBufferReadSize))
	err := r.readBatches(c, c.handle)
	if c.closed() {
		return net.ErrClosed
	}
	return fmt.Errorf("udp read %v: %w", c.LocalAddr(), err)
}

// handle passes on the n datagrams r has just read; false once the conn is
// closed.
func (c *udpConn) handle(r *batchReader, n int) bool {
	local := c.LocalAddr()
	var back []datagram
	for i := range n {
		data, from := r.datagram(i)
		if c.tap != nil && isMessage(data) {
			c.tap.Capture("udp", from, local, data)
		}
		if len(bytes.Trim(data, "\x00")) == 0 {
			continue // as sipgo's loop: padding, nothing to parse
		}
		rest, err := c.hook(sipmsg.TransportReadProps{Transport: "UDP", LocalAddr: local, RemoteAddr: from}, data)
		if err != nil || len(rest) == 0 {
			continue
		}
		back = append(back, datagram{data: bytes.Clone(rest), from: from})
	}
	if len(back) == 0 {
		return !c.closed()
	}
	select {
	case c.back <- back:
		return true
	case <-c.done:
		return false
	}
}

// ReadFrom returns the next datagram handed back to sipgo, or without a
// hook the next one on the socket (sipgo's listener read loop is the only
// caller).
func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.hook == nil {
		n, from, err := c.UDPConn.ReadFrom(b)
		if err == nil && c.tap != nil && isMessage(b[:n]) {
			c.tap.Capture("udp", from, c.LocalAddr(), b[:n])
		}
		return n, from, err
	}
	for len(c.rest) == 0 {
		select {
		case c.rest = <-c.back:
		case <-c.done:
			return 0, nil, net.ErrClosed
		}
	}
	d := c.rest[0]
	c.rest = c.rest[1:]
	return copy(b, d.data), d.from, nil
}

// WriteTo sends b to addr from the socket, and to the tap.
func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := c.UDPConn.WriteTo(b, addr)
	if err == nil && c.tap != nil && isMessage(b) {
		c.tap.Capture("udp", c.LocalAddr(), addr, b)
	}
	return n, err
}

// WriteToUDPAddrPort is WriteTo without a net.Addr (the byte relay,
// relayBytes); it shadows the socket's own, which would miss the tap.
func (c *udpConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	n, err := c.UDPConn.WriteToUDPAddrPort(b, to)
	if err == nil && c.tap != nil && isMessage(b) {
		c.tap.Capture("udp", c.LocalAddr(), net.UDPAddrFromAddrPort(to), b)
	}
	return n, err
}

// Close ends both read loops, ours and sipgo's, and closes the socket.
func (c *udpConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.done)
		c.closeErr = c.UDPConn.Close()
	})
	return c.closeErr
}

func (c *udpConn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}
