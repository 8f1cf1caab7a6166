package sip

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
)

// loopConn is a udpConn on a free loopback port whose read loop (with a
// hook, as Server.Serve starts it) runs until the test ends; serveErr
// receives the loop's result.
func loopConn(t *testing.T, hook udpHook) (c *udpConn, serveErr chan error) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err = newUDPConn(pc)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	if err := c.SetReadBuffer(udpReadBuffer); err != nil {
		t.Fatal(err)
	}
	c.hook = hook
	serveErr = make(chan error, 1)
	if hook != nil {
		go func() { serveErr <- c.serve() }()
	}
	t.Cleanup(func() { c.Close() })
	return c, serveErr
}

// hookLog records what a hook saw and hands back datagrams that start with
// "back".
type hookLog struct {
	mu     sync.Mutex
	got    []string // "from|data"
	onSeen func()   // if set, called for each datagram
}

func (h *hookLog) hook(p sipmsg.TransportReadProps, data []byte, _ *sendBatch) ([]byte, error) {
	h.mu.Lock()
	h.got = append(h.got, p.RemoteAddr.String()+"|"+string(data))
	h.mu.Unlock()
	if h.onSeen != nil {
		h.onSeen()
	}
	if strings.HasPrefix(string(data), "back") {
		return data, nil
	}
	return nil, nil
}

func (h *hookLog) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.got...)
}

// sender is a client socket on a free loopback port.
func sender(t *testing.T) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// readBack is sipgo's side: the next datagram handed back, within a deadline.
func readBack(t *testing.T, c *udpConn) (string, net.Addr) {
	t.Helper()
	type res struct {
		s    string
		from net.Addr
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		b := make([]byte, 2048)
		n, from, err := c.ReadFrom(b)
		ch <- res{string(b[:n]), from, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("ReadFrom: %v", r.err)
		}
		return r.s, r.from
	case <-time.After(5 * time.Second):
		t.Fatal("nothing handed back to sipgo")
		return "", nil
	}
}

// Every datagram reaches the hook with its sender, in order; only what the
// hook hands back reaches sipgo's ReadFrom, in order and with its sender;
// datagrams of zero bytes only reach neither.
func TestUDPConnHandBack(t *testing.T) {
	h := &hookLog{}
	c, _ := loopConn(t, h.hook)
	src := sender(t)
	msgs := []string{"keep 1", "back 1", "\x00\x00", "keep 2", "back 2", "\r\n\r\n"}
	for _, m := range msgs {
		if _, err := src.WriteTo([]byte(m), c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"back 1", "back 2"} {
		got, from := readBack(t, c)
		if got != want || from.String() != src.LocalAddr().String() {
			t.Fatalf("handed back %q from %v, want %q from %v", got, from, want, src.LocalAddr())
		}
	}
	// The CRLF keepalive goes to the hook, which does not hand it back
	// here; the zero bytes never reach it (sipgo skips them as well).
	waitFor(t, "the hook to see every datagram", 5*time.Second, func() bool { return len(h.seen()) == 5 })
	var want []string
	for _, m := range msgs {
		if m != "\x00\x00" {
			want = append(want, src.LocalAddr().String()+"|"+m)
		}
	}
	if got := h.seen(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("hook saw %q, want %q", got, want)
	}
}

// Without a hook sipgo reads every datagram off the socket (stateful mode
// as it is).
func TestUDPConnNoHook(t *testing.T) {
	c, _ := loopConn(t, nil)
	src := sender(t)
	for i := range 3 {
		src.WriteTo([]byte(fmt.Sprint("msg ", i)), c.LocalAddr())
	}
	for i := range 3 {
		if got, _ := readBack(t, c); got != fmt.Sprint("msg ", i) {
			t.Fatalf("datagram %d: %q", i, got)
		}
	}
}

// Closing the conn ends a read loop blocked waiting for datagrams, and
// sipgo's ReadFrom.
func TestUDPConnCloseEndsBlockedReader(t *testing.T) {
	h := &hookLog{}
	c, serveErr := loopConn(t, h.hook)
	src := sender(t)
	src.WriteTo([]byte("keep"), c.LocalAddr())
	// The loop has handled a datagram and gone back to wait for the next.
	waitFor(t, "the first datagram", 5*time.Second, func() bool { return len(h.seen()) == 1 })
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.ReadFrom(make([]byte, 10))
		readErr <- err
	}()
	select {
	case err := <-serveErr:
		t.Fatalf("read loop ended before Close: %v", err)
	default:
	}
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	for name, ch := range map[string]chan error{"read loop": serveErr, "ReadFrom": readErr} {
		select {
		case err := <-ch:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("%s ended with %v, want net.ErrClosed", name, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s still blocked after Close", name)
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	if c.Close() != nil {
		t.Fatal("a second Close failed")
	}
}

// Many senders at once: each sender's datagrams reach the hook, and those
// handed back reach sipgo, in the order that sender sent them. At most
// inFlight datagrams are unread at a time, so that none is lost to a
// receive buffer the kernel caps (net.core.rmem_max).
func TestUDPConnParallelSendersKeepOrder(t *testing.T) {
	const senders, each, inFlight = 8, 100, 64
	window := make(chan struct{}, inFlight)
	h := &hookLog{onSeen: func() { <-window }}
	c, _ := loopConn(t, h.hook)
	var wg sync.WaitGroup
	for s := range senders {
		src := sender(t)
		wg.Go(func() {
			for i := range each {
				window <- struct{}{}
				kind := "keep"
				if i%2 == 1 {
					kind = "back"
				}
				if _, err := src.WriteTo(fmt.Appendf(nil, "%s %d %d", kind, s, i), c.LocalAddr()); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	// sipgo's side reads while the senders send.
	backs := make(chan string, senders*each)
	go func() {
		b := make([]byte, 100)
		for {
			n, _, err := c.ReadFrom(b)
			if err != nil {
				return
			}
			backs <- string(b[:n])
		}
	}()
	wg.Wait()
	waitFor(t, "every datagram at the hook", 10*time.Second, func() bool { return len(h.seen()) == senders*each })
	next := map[int]int{}
	for _, e := range h.seen() {
		var kind string
		var s, i int
		fmt.Sscanf(e[strings.Index(e, "|")+1:], "%s %d %d", &kind, &s, &i)
		if i != next[s] {
			t.Fatalf("hook: sender %d's datagram %d came after %d", s, i, next[s]-1)
		}
		next[s]++
	}
	nextBack := map[int]int{}
	for range senders * each / 2 {
		select {
		case m := <-backs:
			var s, i int
			fmt.Sscanf(m, "back %d %d", &s, &i)
			if want := 2*nextBack[s] + 1; i != want {
				t.Fatalf("sipgo: sender %d's datagram %d, want %d", s, i, want)
			}
			nextBack[s]++
		case <-time.After(5 * time.Second):
			t.Fatal("not every handed-back datagram reached sipgo")
		}
	}
}

// A keepalive's reply goes from the read loop to sipgo, whose client
// transaction completes, in both modes and with several sockets per address.
func TestProbeReplyThroughReadLoop(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(nil)
			d.targets = []actors.ProbeTarget{{SetID: 1, Dest: gw.dest(1)}}
			cfg := testConfig(mode)
			cfg.UDPReaders = 2
			cfg.PingInterval = 50 * time.Millisecond
			cfg.FRTimer = time.Second
			startProxy(t, cfg, d, fixedRoutes{})
			waitFor(t, "a probe report", 5*time.Second, func() bool {
				d.mu.Lock()
				defer d.mu.Unlock()
				return len(d.probes) > 0
			})
			d.mu.Lock()
			p := d.probes[0]
			d.mu.Unlock()
			if p.res.Code != 200 || p.res.Timeout {
				t.Fatalf("probe report %+v, want code 200", p)
			}
		})
	}
}
