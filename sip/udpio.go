package sip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"

	sipmsg "github.com/emiago/sipgo/sip"
)

// udpHook handles a datagram a UDP listener read, on that listener's read
// loop, before sipgo sees it: it returns nil when it has dealt with the
// datagram, and may then have rewritten it in place (the byte relay), else
// the bytes to hand to sipgo. What it writes through out, the loop's batch,
// leaves when the loop has handled the whole read batch (sendBatch).
// Stateless mode's is statelessRead, stateful mode's statefulRead.
type udpHook func(p sipmsg.TransportReadProps, data []byte, out *sendBatch) ([]byte, error)

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
// The writes the hook makes through its sendBatch leave together at the end
// of each read batch; every other write — another goroutine's, sipgo's —
// goes straight to the socket (WriteTo).
type udpConn struct {
	*net.UDPConn // the socket: writes, local address, buffers
	raw          syscall.RawConn
	family       int // AF_INET or AF_INET6 where sendBatch encodes addresses (Linux); else 0

	hook udpHook    // nil: no loop of ours, sipgo reads the socket
	out  *sendBatch // the loop's batch of writes; only the loop uses it
	tap  Tap        // nil: no capture

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
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("udp listener %v: %w", pc.LocalAddr(), err)
	}
	return &udpConn{
		UDPConn: uc, raw: raw, family: socketFamily(raw), out: &sendBatch{},
		back: make(chan []datagram, 64), done: make(chan struct{}),
	}, nil
}

// serve reads the socket until Close (only with a hook): each datagram
// goes to the tap, then the hook; the hook's writes leave together after
// the batch (c.out); what the hook hands back goes to sipgo as one batch per read,
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
		rest, err := c.hook(sipmsg.TransportReadProps{Transport: "UDP", LocalAddr: local, RemoteAddr: from}, data, c.out)
		if err != nil || len(rest) == 0 {
			continue
		}
		back = append(back, datagram{data: bytes.Clone(rest), from: from})
	}
	c.out.flush()
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
	n, err := c.sendTo(b, addr)
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

// sendBatch is a read loop's outbox (udpConn.serve): the writes its hook
// makes while it handles one read batch, sent together when the batch is
// done — on Linux one sendmmsg per socket written to (udpio_linux.go),
// elsewhere one write each. Only the loop's goroutine uses it: a write
// joins the batch only when the hook passes the batch down to it (the
// stateless proxy's wireTx of the loop, the ACK forwarded from a stateful
// read loop), so writes made on any other goroutine — transaction timers,
// the algorithm-10 hand-off pool, probes, sipgo — never wait for a batch.
//
// A queued write's failure is known only when the batch goes out: each
// write carries the handler its owner gave (writeMsg), run on the loop
// after the send, in write order. Writes a handler makes (a 503 for a
// forward that failed) go out in one more round of the same flush.
type sendBatch struct {
	q   []queuedWrite
	buf []byte // the queued datagrams, back to back
	// q2 and buf2 are the spare pair: while a flush sends q and buf, the
	// writes its failure handlers make go into them.
	q2   []queuedWrite
	buf2 []byte
	// views are sipgo writers whose WriteTo queues here, one per socket
	// written to (view).
	views []batchView
	// failed is the handler of the write writeMsg is queuing.
	failed func(error)
	// orphan handles the failure of a write queued without a handler;
	// nil ignores it.
	orphan func(to net.Addr, err error)
	// txs are the stateless proxy's stand-ins for a server transaction
	// whose replies join this batch (socket.loopTx).
	txs []*wireTx
	sys sendSys // the OS's send state (sendmmsg headers on Linux)
}

// queuedWrite is one datagram waiting in a sendBatch.
type queuedWrite struct {
	c      *udpConn
	to     net.Addr
	off, n int // its bytes in the batch's buf
	failed func(error)
	sa     sockaddr // to, encoded for the kernel when it can be (Linux)
	err    error    // set by send
}

// batchView is sipgo's writer (UDPConnection.WriteMsg serialises a message
// and calls WriteTo) over a socket, queuing into a batch.
type batchView struct {
	c *udpConn
	w *sipmsg.UDPConnection
}

// batchConn is the PacketConn under a batchView: WriteTo queues.
type batchConn struct {
	*udpConn
	b *sendBatch
}

// WriteTo queues a copy of p (sipgo reuses its buffer) for addr.
func (bc batchConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	bc.b.add(bc.udpConn, p, addr)
	return len(p), nil
}

// writeMsg queues msg for c's socket; failed, if not nil, runs on the loop
// if the write fails, at once (the message could not be serialised or
// addressed) or when the batch goes out.
func (b *sendBatch) writeMsg(c *udpConn, msg sipmsg.Message, failed func(error)) {
	b.failed = failed
	err := b.view(c).WriteMsg(msg)
	b.failed = nil
	if err != nil {
		b.report(failed, nil, err)
	}
}

// view is the batchView of c, made at its first use.
func (b *sendBatch) view(c *udpConn) *sipmsg.UDPConnection {
	for _, v := range b.views {
		if v.c == c {
			return v.w
		}
	}
	w := &sipmsg.UDPConnection{PacketConn: batchConn{udpConn: c, b: b}, PacketAddr: c.LocalAddr().String(), Listener: true}
	b.views = append(b.views, batchView{c: c, w: w})
	return w
}

// addFor queues a copy of p for to on c's socket; failed handles its
// failure at the flush.
func (b *sendBatch) addFor(c *udpConn, p []byte, to net.Addr, failed func(error)) {
	b.failed = failed
	b.add(c, p, to)
	b.failed = nil
}

// add queues a copy of p for to on c's socket.
func (b *sendBatch) add(c *udpConn, p []byte, to net.Addr) {
	off := len(b.buf)
	b.buf = append(b.buf, p...)
	b.q = append(b.q, queuedWrite{c: c, to: to, off: off, n: len(p), failed: b.failed, sa: c.sockaddr(to)})
}

// flush sends what is queued, in order, then reports each failed write to
// its handler; what the handlers write goes out in a further round.
func (b *sendBatch) flush() {
	for len(b.q) > 0 {
		q, buf := b.q, b.buf
		b.q, b.buf = b.q2[:0], b.buf2[:0]
		b.sys.send(q, buf)
		for i := range q {
			w := &q[i]
			if w.err != nil {
				b.report(w.failed, w.to, w.err)
			} else if w.c.tap != nil && isMessage(buf[w.off:w.off+w.n]) {
				w.c.tap.Capture("udp", w.c.LocalAddr(), w.to, buf[w.off:w.off+w.n])
			}
		}
		clear(q) // no references kept until the next batch
		b.q2, b.buf2 = q[:0], buf[:0]
	}
}

// report hands a failed write's error to its handler, else to orphan.
func (b *sendBatch) report(failed func(error), to net.Addr, err error) {
	switch {
	case failed != nil:
		failed(err)
	case b.orphan != nil:
		b.orphan(to, err)
	}
}

// writeQueued writes one queued datagram on its own, as WriteTo would.
func writeQueued(w *queuedWrite, buf []byte) {
	_, w.err = w.c.UDPConn.WriteTo(buf[w.off:w.off+w.n], w.to)
}
