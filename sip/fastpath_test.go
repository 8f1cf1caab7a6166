package sip

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// rawCaller is a bare UDP socket speaking to the proxy, so that a test sees
// every datagram the proxy sends it.
type rawCaller struct {
	c  net.PacketConn
	to net.Addr
}

func newRawCaller(t *testing.T, proxy string) *rawCaller {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	to, err := net.ResolveUDPAddr("udp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	return &rawCaller{c: c, to: to}
}

func (r *rawCaller) send(t *testing.T, msg string) {
	t.Helper()
	if _, err := r.c.WriteTo([]byte(msg), r.to); err != nil {
		t.Fatal(err)
	}
}

// read returns the next datagram within d, or nil when none came.
func (r *rawCaller) read(t *testing.T, d time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 65535)
	r.c.SetReadDeadline(time.Now().Add(d))
	n, _, err := r.c.ReadFrom(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func (r *rawCaller) request(method, ruri, callID, toTag string) string {
	to := "<" + ruri + ">"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	return fmt.Sprintf("%s %s SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP %s;branch=z9hG4bK%s;rport\r\n"+
		"From: <sip:a@example.net>;tag=1\r\nTo: %s\r\n"+
		"Call-ID: %s\r\nCSeq: 1 %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		method, ruri, r.c.LocalAddr(), callID, to, callID, method)
}

// A stateless proxy generates no provisional response of its own (RFC 3261
// §16.11): while the gateway stays silent the caller hears nothing, not even
// the 100 Trying a server transaction would send after 200 ms.
func TestStatelessNoOwnProvisional(t *testing.T) {
	gw := newGateway(t, "silent")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateless), d, dispatchRoute(1))
	c := newRawCaller(t, proxy)
	c.send(t, c.request("INVITE", "sip:+15550100@pstn.example.net", "silent-1", ""))
	waitFor(t, "INVITE at the gateway", 2*time.Second, func() bool { return gw.invites.Load() == 1 })
	if got := c.read(t, time.Second); got != nil {
		t.Fatalf("caller got %q from a stateless proxy, want nothing", got)
	}
}

// The ACK for a reply the stateless proxy sent itself ends at the proxy
// (RFC 3261 §17.2.1); it is not routed on by its Request-URI, here the
// gateway's address.
func TestStatelessLocalReplyAckAbsorbed(t *testing.T) {
	gw := newGateway(t, "answer")
	d := newFakeDispatcher(nil)
	_, proxy := startProxy(t, testConfig(ModeStateless), d, fixedRoutes{})
	c := newRawCaller(t, proxy)
	ruri := "sip:x@" + gw.addr
	c.send(t, c.request("INVITE", ruri, "local-ack-1", ""))
	raw := c.read(t, 2*time.Second)
	if raw == nil {
		t.Fatal("no reply to the INVITE")
	}
	msg, err := sipmsg.ParseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := msg.(*sipmsg.Response)
	if !ok || res.StatusCode != 404 {
		t.Fatalf("reply %q, want 404", raw)
	}
	tag, _ := res.To().Params.Get("tag")
	if tag == "" {
		t.Fatal("404 without a To tag")
	}
	c.send(t, c.request("INVITE", ruri, "local-ack-1", ""))
	if again := c.read(t, 2*time.Second); !bytes.Contains(again, []byte("tag="+tag)) {
		t.Fatalf("retransmission answered %q, want the same To tag %s", again, tag)
	}
	c.send(t, c.request("ACK", ruri, "local-ack-1", tag))
	// An ACK with a foreign tag is routed by its Request-URI: once it has
	// reached the gateway, the first one would have too.
	c.send(t, c.request("ACK", ruri, "local-ack-2", "theirs"))
	waitFor(t, "the other ACK at the gateway", 2*time.Second, func() bool { return gw.acks.Load() >= 1 })
	if n := gw.acks.Load(); n != 1 {
		t.Fatalf("gateway got %d ACKs, want only the one not for our 404", n)
	}
}

// Responses go back to received and rport when the Via has them (RFC 3261
// §18.2.2, RFC 3581 §4), else to sent-by and the transport's default port.
func TestViaDestination(t *testing.T) {
	tests := []struct {
		via, proto, want string
	}{
		{"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1", "UDP", "10.0.0.1:5070"},
		{"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1", "UDP", "10.0.0.1:5060"},
		{"SIP/2.0/TLS 10.0.0.1;branch=z9hG4bK1", "TLS", "10.0.0.1:5061"},
		{"SIP/2.0/UDP pc.example.net:5070;received=192.0.2.7;rport=40000;branch=z9hG4bK1", "UDP", "192.0.2.7:40000"},
		{"SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK1", "UDP", "10.0.0.1:5070"},
		{"SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1", "UDP", "[2001:db8::1]:5070"},
	}
	for _, tc := range tests {
		msg, err := sipmsg.ParseMessage([]byte("SIP/2.0 200 OK\r\nVia: " + tc.via + "\r\nContent-Length: 0\r\n\r\n"))
		if err != nil {
			t.Fatalf("%s: %v", tc.via, err)
		}
		if got := viaDestination(msg.(*sipmsg.Response).Via(), tc.proto); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.via, got, tc.want)
		}
	}
}

// With several readers every socket of the listen address takes the fast
// path: from many callers (spread by the kernel over the sockets by source
// address) every INVITE reaches the silent gateway and no caller hears a
// 100 Trying, which only sipgo's transaction path would send.
func TestStatelessSeveralReaders(t *testing.T) {
	if !reusePortSupported {
		t.Skip("SO_REUSEPORT is only wired up on Linux")
	}
	gw := newGateway(t, "silent")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
	cfg := testConfig(ModeStateless)
	cfg.UDPReaders = 4
	s, proxy := startProxy(t, cfg, d, dispatchRoute(1))
	if n := len(s.socks[0].more); n != 3 {
		t.Fatalf("%d extra sockets, want 3", n)
	}
	const callers = 24
	var cs []*rawCaller
	for i := range callers {
		c := newRawCaller(t, proxy)
		c.send(t, c.request("INVITE", "sip:+15550100@pstn.example.net", fmt.Sprintf("readers-%d", i), ""))
		cs = append(cs, c)
	}
	waitFor(t, "every INVITE at the gateway", 5*time.Second, func() bool { return gw.invites.Load() == callers })
	for _, pc := range s.socks[0].more {
		if s.udpListener(pc.LocalAddr()) != s.socks[0] {
			t.Fatalf("socket %v is not recognised as the listener's", pc.LocalAddr())
		}
	}
	// A server transaction would have sent its 100 Trying after 200 ms: the
	// first read waits a second for it, the others find what has come by then.
	for i, c := range cs {
		wait := 10 * time.Millisecond
		if i == 0 {
			wait = time.Second
		}
		if got := c.read(t, wait); got != nil {
			t.Fatalf("caller %d got %q: its INVITE did not take the stateless fast path", i, got)
		}
	}
	// The address stays exclusive: another bind of it fails, also with
	// SO_REUSEPORT.
	if _, _, err := listenUDP(s.socks[0].pc.LocalAddr().String(), 2); err == nil {
		t.Fatal("a second group bound the proxy's address")
	}
}
