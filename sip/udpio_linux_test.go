package sip

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// One read takes every datagram queued on the socket, up to the batch size,
// each with its own bytes and sender.
func TestBatchReaderTakesQueuedDatagrams(t *testing.T) {
	c := testConn(t)
	a, b := sender(t), sender(t)
	const queued = udpBatch + 3
	for i := range queued {
		src := a
		if i%2 == 1 {
			src = b
		}
		// On loopback a datagram is in the receiver's queue once WriteTo returns.
		if _, err := src.WriteTo(fmt.Appendf(nil, "d%d", i), c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	r := newBatchReader(udpBatch, 100)
	var sizes []int
	i := 0
	err := r.readBatches(c, func(r *batchReader, n int) bool {
		sizes = append(sizes, n)
		for j := range n {
			data, from := r.datagram(j)
			src := a
			if i%2 == 1 {
				src = b
			}
			if string(data) != fmt.Sprint("d", i) || from.String() != src.LocalAddr().String() {
				t.Errorf("datagram %d: %q from %v, want d%d from %v", i, data, from, i, src.LocalAddr())
			}
			i++
		}
		return i < queued
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(sizes) != fmt.Sprint([]int{udpBatch, queued - udpBatch}) {
		t.Fatalf("read batches of %v, want [%d %d]", sizes, udpBatch, queued-udpBatch)
	}
}

// batchTap records what a udpConn's tap captured.
type batchTap struct {
	mu  sync.Mutex
	got []string // "dst|msg"
}

func (b *batchTap) Capture(_ string, _, dst net.Addr, msg []byte) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.got = append(b.got, dst.String()+"|"+string(msg))
}

// testConn is a udpConn on a free port of 127.0.0.1, closed when the test ends.
func testConn(t *testing.T) *udpConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := newUDPConn(pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// receive reads n datagrams off r, each within a deadline.
func receive(t *testing.T, r net.PacketConn, n int) []string {
	t.Helper()
	var got []string
	buf := make([]byte, 2048)
	for range n {
		r.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, _, err := r.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, string(buf[:m]))
	}
	return got
}

// A batch's writes all go out at its flush, each to its socket and
// destination, in the order they were queued, to the tap too; sipgo's
// writer (writeMsg) queues like any other. More writes than a read batch
// holds, and runs of writes to two sockets interleaved.
func TestSendBatchInOrder(t *testing.T) {
	c1, c2 := testConn(t), testConn(t)
	tap := &batchTap{}
	c1.tap = tap
	r1, r2 := sender(t), sender(t)
	b := &sendBatch{}
	var want1, want2, wantTap []string
	for i := range 3 * udpBatch {
		m := fmt.Sprint("m", i)
		switch {
		case i < udpBatch || i%3 == 0:
			b.add(c1, []byte(m), r1.LocalAddr())
			want1 = append(want1, m)
			wantTap = append(wantTap, r1.LocalAddr().String()+"|"+m)
		case i%3 == 1:
			b.add(c1, []byte(m), r2.LocalAddr())
			want2 = append(want2, m)
			wantTap = append(wantTap, r2.LocalAddr().String()+"|"+m)
		default:
			b.add(c2, []byte(m), r1.LocalAddr())
			want1 = append(want1, m)
		}
	}
	req := sipmsg.NewRequest(sipmsg.OPTIONS, sipmsg.Uri{Scheme: "sip", Host: "127.0.0.1"})
	req.SetDestination(r2.LocalAddr().String())
	b.writeMsg(c2, req, func(err error) { t.Errorf("writeMsg failed: %v", err) })
	want2 = append(want2, req.String())
	// On loopback a datagram is in the receiver's queue once it is sent.
	r1.SetReadDeadline(time.Now())
	if n, _, err := r1.ReadFrom(make([]byte, 10)); err == nil {
		t.Fatalf("%d bytes sent before the flush", n)
	}
	b.flush()
	if got := receive(t, r1, len(want1)); fmt.Sprint(got) != fmt.Sprint(want1) {
		t.Errorf("receiver 1 got %q, want %q", got, want1)
	}
	if got := receive(t, r2, len(want2)); fmt.Sprint(got) != fmt.Sprint(want2) {
		t.Errorf("receiver 2 got %q, want %q", got, want2)
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if fmt.Sprint(tap.got) != fmt.Sprint(wantTap) {
		t.Errorf("tap captured %q, want %q", tap.got, wantTap)
	}
	if len(b.q) != 0 || len(b.buf) != 0 {
		t.Errorf("batch not empty after the flush: %d writes, %d bytes", len(b.q), len(b.buf))
	}
}

// A write the kernel refuses — to port 0 (EINVAL), or to an IPv6 address
// from an IPv4 socket (EAFNOSUPPORT) — is reported to its own handler with
// its error, in write order, and stops none of the others, before or after
// it in the same sendmmsg; what a handler writes goes out in the same
// flush, after the batch. A failed write without a handler goes to orphan;
// the tap sees only what was sent. (Not the broadcast address: Go sets
// SO_BROADCAST on every UDP socket, so that would go out.)
func TestSendBatchFailedWriteReported(t *testing.T) {
	c := testConn(t)
	tap := &batchTap{}
	c.tap = tap
	r := sender(t)
	port0 := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 0}
	v6 := &net.UDPAddr{IP: net.IPv6loopback, Port: r.LocalAddr().(*net.UDPAddr).Port}
	var orphans []string
	b := &sendBatch{orphan: func(to net.Addr, err error) { orphans = append(orphans, fmt.Sprint(to)) }}
	var failed []string
	write := func(m string, to net.Addr, want error) {
		b.failed = func(err error) {
			if !errors.Is(err, want) {
				t.Errorf("%s: failed with %v, want %v", m, err, want)
			}
			failed = append(failed, m)
			b.add(c, []byte("after "+m), r.LocalAddr())
		}
		b.add(c, []byte(m), to)
		b.failed = nil
	}
	write("port 0", port0, syscall.EINVAL)
	write("a", r.LocalAddr(), nil)
	write("v6", v6, syscall.EAFNOSUPPORT)
	write("b", r.LocalAddr(), nil)
	b.add(c, []byte("no handler"), port0)
	write("c", r.LocalAddr(), nil)
	write("port 0 again", port0, syscall.EINVAL)
	b.flush()
	want := []string{"a", "b", "c", "after port 0", "after v6", "after port 0 again"}
	if got := receive(t, r, len(want)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("received %q, want %q", got, want)
	}
	if want := []string{"port 0", "v6", "port 0 again"}; fmt.Sprint(failed) != fmt.Sprint(want) {
		t.Errorf("failures reported for %q, want %q", failed, want)
	}
	if want := []string{port0.String()}; fmt.Sprint(orphans) != fmt.Sprint(want) {
		t.Errorf("orphan failures %q, want %q", orphans, want)
	}
	tap.mu.Lock()
	defer tap.mu.Unlock()
	if len(tap.got) != len(want) {
		t.Errorf("tap captured %q, want the %d sent", tap.got, len(want))
	}
}

// A batch flushed after its socket closed reports every write as failed.
func TestSendBatchClosedSocket(t *testing.T) {
	c := testConn(t)
	r := sender(t)
	b := &sendBatch{}
	var errs []error
	for _, m := range []string{"a", "b"} {
		b.failed = func(err error) { errs = append(errs, err) }
		b.add(c, []byte(m), r.LocalAddr())
	}
	b.failed = nil
	c.Close()
	b.flush()
	if len(errs) != 2 || !errors.Is(errs[0], net.ErrClosed) || !errors.Is(errs[1], net.ErrClosed) {
		t.Fatalf("errors %v, want net.ErrClosed twice", errs)
	}
}

// A write at once (sendTo, a raw sendto) arrives with its bytes, from the
// socket's address, and the tap sees it; a destination the kernel refuses
// returns the kernel's error; one sockaddr cannot encode goes through the
// net package and still arrives.
func TestUDPConnWriteTo(t *testing.T) {
	c := testConn(t)
	tap := &recordTap{}
	c.tap = tap
	rcv := sender(t) // a plain socket to receive on
	msg := []byte("OPTIONS sip:a@127.0.0.1 SIP/2.0\r\n\r\n")
	if n, err := c.WriteTo(msg, rcv.LocalAddr()); err != nil || n != len(msg) {
		t.Fatalf("WriteTo = %d, %v; want %d, nil", n, err, len(msg))
	}
	buf := make([]byte, 100)
	rcv.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, from, err := rcv.ReadFrom(buf)
	if err != nil || string(buf[:n]) != string(msg) || from.String() != c.LocalAddr().String() {
		t.Fatalf("received %q from %v (%v); want %q from %v", buf[:n], from, err, msg, c.LocalAddr())
	}
	if got := len(tap.got()); got != 1 {
		t.Fatalf("tap saw %d datagrams, want 1", got)
	}
	_, err = c.WriteTo(msg, &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5060})
	if !errors.Is(err, syscall.EAFNOSUPPORT) {
		t.Fatalf("IPv6 destination from an IPv4 socket: err %v, want EAFNOSUPPORT", err)
	}
	if got := len(tap.got()); got != 1 {
		t.Fatalf("tap saw %d datagrams after a failed write, want 1", got)
	}
	// Not a *net.UDPAddr: the net package's path.
	if _, err := c.WriteTo(msg, udpAddrOnly{rcv.LocalAddr()}); err == nil {
		t.Fatalf("WriteTo with a %T: no error; the net package refuses it", udpAddrOnly{})
	}
}

// udpAddrOnly is a net.Addr that is not a *net.UDPAddr.
type udpAddrOnly struct{ net.Addr }
