package txn

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Short timers so that every path ends in well under a second.
var testTimers = Timers{T1: 20 * time.Millisecond, T2: 80 * time.Millisecond, T4: 100 * time.Millisecond, Wait: 300 * time.Millisecond}

// peer is the other end of a transaction: a UDP socket on loopback whose
// datagrams are parsed into a channel.
type peer struct {
	pc  net.PacketConn
	got chan sipmsg.Message
}

func newPeer(t *testing.T) *peer {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{pc: pc, got: make(chan sipmsg.Message, 256)}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if m, err := sipmsg.ParseMessage(append([]byte(nil), buf[:n]...)); err == nil {
				p.got <- m
			}
		}
	}()
	return p
}

// next waits for the peer's next message.
func (p *peer) next(t *testing.T) sipmsg.Message {
	t.Helper()
	select {
	case m := <-p.got:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("nothing received")
		return nil
	}
}

// quiet reports whether the peer receives nothing for d.
func (p *peer) quiet(d time.Duration) bool {
	select {
	case <-p.got:
		return false
	case <-time.After(d):
		return true
	}
}

func newLayer(t *testing.T) *Layer {
	l := New(testTimers)
	t.Cleanup(l.Close)
	return l
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func parseReq(t *testing.T, s string) *sipmsg.Request {
	t.Helper()
	m, err := sipmsg.ParseMessage([]byte(strings.ReplaceAll(s, "\n", "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	return m.(*sipmsg.Request)
}

// request is a caller's request with the given method and branch (the CSeq
// method is the request's, but ACK and CANCEL keep the INVITE's number).
func request(t *testing.T, method, branch, toTag string) *sipmsg.Request {
	to := "<sip:bob@example.com>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	return parseReq(t, fmt.Sprintf(`%s sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=%s
Max-Forwards: 70
From: <sip:alice@example.com>;tag=a1
To: %s
Call-ID: call-1@192.0.2.1
CSeq: 1 %s
Content-Length: 0

`, method, branch, to, method))
}

func code(t *testing.T, m sipmsg.Message) int {
	t.Helper()
	r, ok := m.(*sipmsg.Response)
	if !ok {
		t.Fatalf("got a request, want a response: %v", m)
	}
	return r.StatusCode
}

// serverConn is the proxy's listener in the server-side tests: what it
// sends goes to the peer.
func serverConn(t *testing.T) net.PacketConn {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func TestServerInviteNon2xxRetransmittedUntilAck(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	src := caller.pc.LocalAddr()
	inv := request(t, "INVITE", "z9hG4bKinv1", "")
	tx, pass := l.Request(inv, conn, src)
	if !pass || tx == nil {
		t.Fatal("a new INVITE must start a transaction for the TU")
	}
	if err := tx.Respond(sipmsg.NewResponseFromRequest(inv, 100, "Trying", nil)); err != nil {
		t.Fatal(err)
	}
	if c := code(t, caller.next(t)); c != 100 {
		t.Fatalf("got %d, want 100", c)
	}
	// A retransmission is absorbed and answered with the last response.
	if tx2, pass := l.Request(request(t, "INVITE", "z9hG4bKinv1", ""), conn, src); pass || tx2 != nil {
		t.Fatal("a retransmitted INVITE reached the TU")
	}
	if c := code(t, caller.next(t)); c != 100 {
		t.Fatalf("retransmission answered %d, want the 100 again", c)
	}
	if err := tx.Respond(sipmsg.NewResponseFromRequest(inv, 486, "Busy Here", nil)); err != nil {
		t.Fatal(err)
	}
	// Timer G: the 486 goes out again until the ACK comes.
	for i := range 3 {
		if c := code(t, caller.next(t)); c != 486 {
			t.Fatalf("send %d: got %d, want 486", i, c)
		}
	}
	if _, pass := l.Request(request(t, "ACK", "z9hG4bKinv1", "x"), conn, src); pass {
		t.Fatal("the ACK for the 486 reached the TU")
	}
	// A retransmitted ACK is absorbed too (Confirmed), then Timer I ends it.
	if _, pass := l.Request(request(t, "ACK", "z9hG4bKinv1", "x"), conn, src); pass {
		t.Fatal("a retransmitted ACK reached the TU")
	}
	for len(caller.got) > 0 { // a retransmission already under way
		<-caller.got
	}
	if !caller.quiet(4 * testTimers.T2) {
		t.Fatal("the 486 still retransmitted after its ACK")
	}
	waitFor(t, "Timer I", func() bool { s, _ := l.Len(); return s == 0 })
	if err := tx.Respond(sipmsg.NewResponseFromRequest(inv, 200, "OK", nil)); err == nil {
		t.Fatal("Respond after the end succeeded")
	}
}

func TestServerInviteTimerHWithoutAck(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	inv := request(t, "INVITE", "z9hG4bKinvH", "")
	tx, _ := l.Request(inv, conn, caller.pc.LocalAddr())
	start := time.Now()
	_ = tx.Respond(sipmsg.NewResponseFromRequest(inv, 503, "Service Unavailable", nil))
	waitFor(t, "Timer H", func() bool { s, _ := l.Len(); return s == 0 })
	if d := time.Since(start); d < 64*testTimers.T1 {
		t.Fatalf("ended after %v, before Timer H (%v)", d, 64*testTimers.T1)
	}
	if n := len(caller.got); n < 5 {
		t.Fatalf("the 503 went out %d times, want it retransmitted (Timer G) until Timer H", n)
	}
}

func TestServerInvite2xxAccepted(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	src := caller.pc.LocalAddr()
	inv := request(t, "INVITE", "z9hG4bKinv2", "")
	tx, _ := l.Request(inv, conn, src)
	ok := sipmsg.NewResponseFromRequest(inv, 200, "OK", nil)
	if err := tx.Respond(ok); err != nil {
		t.Fatal(err)
	}
	if c := code(t, caller.next(t)); c != 200 {
		t.Fatalf("got %d", c)
	}
	// Accepted (RFC 6026): a retransmitted INVITE is absorbed without an
	// answer; another branch's 2xx still goes out; a non-2xx does not.
	if _, pass := l.Request(request(t, "INVITE", "z9hG4bKinv2", ""), conn, src); pass {
		t.Fatal("a retransmitted INVITE reached the TU in Accepted")
	}
	if err := tx.Respond(ok); err != nil {
		t.Fatalf("a second 2xx in Accepted: %v", err)
	}
	if c := code(t, caller.next(t)); c != 200 {
		t.Fatalf("got %d", c)
	}
	if err := tx.Respond(sipmsg.NewResponseFromRequest(inv, 486, "Busy Here", nil)); err == nil {
		t.Fatal("a non-2xx after a 2xx was sent")
	}
	if !caller.quiet(3 * testTimers.T1) {
		t.Fatal("something was sent for the absorbed INVITE or the refused 486")
	}
	// The ACK for the 2xx is a transaction of its own: it goes to the TU.
	if tx, pass := l.Request(request(t, "ACK", "z9hG4bKack2", "x"), conn, src); !pass || tx != nil {
		t.Fatal("the ACK for a 2xx must go to the TU without a transaction")
	}
	waitFor(t, "Timer L", func() bool { s, _ := l.Len(); return s == 0 })
}

func TestServerCancel(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	src := caller.pc.LocalAddr()
	inv := request(t, "INVITE", "z9hG4bKinv3", "")
	tx, _ := l.Request(inv, conn, src)
	var cancelled atomic.Int32
	if !tx.OnCancel(func(*sipmsg.Request) { cancelled.Add(1) }) {
		t.Fatal("OnCancel on a pending INVITE returned false")
	}
	if _, pass := l.Request(request(t, "CANCEL", "z9hG4bKinv3", ""), conn, src); pass {
		t.Fatal("a CANCEL matching a pending INVITE reached the TU")
	}
	got := map[string]int{}
	for range 2 {
		r := caller.next(t).(*sipmsg.Response)
		got[string(r.CSeq().MethodName)] = r.StatusCode
	}
	if got["CANCEL"] != 200 || got["INVITE"] != 487 {
		t.Fatalf("replies %v, want CANCEL 200 and INVITE 487", got)
	}
	if cancelled.Load() != 1 {
		t.Fatal("the TU was not told of the CANCEL")
	}
	if tx.OnCancel(func(*sipmsg.Request) {}) {
		t.Fatal("OnCancel after the CANCEL returned true")
	}
	if err := tx.Respond(sipmsg.NewResponseFromRequest(inv, 200, "OK", nil)); err == nil {
		t.Fatal("a 200 after the 487 was sent")
	}
	// A retransmitted CANCEL gets its 200 again; the INVITE no second 487.
	l.Request(request(t, "CANCEL", "z9hG4bKinv3", ""), conn, src)
	for {
		r := caller.next(t).(*sipmsg.Response)
		if r.CSeq().MethodName == sipmsg.CANCEL {
			break
		}
		if r.StatusCode != 487 { // Timer G may resend the 487
			t.Fatalf("got %d to the INVITE", r.StatusCode)
		}
	}
	if cancelled.Load() != 1 {
		t.Fatal("the TU was told twice")
	}
	// A CANCEL that matches nothing is the TU's (481).
	if tx, pass := l.Request(request(t, "CANCEL", "z9hG4bKnone", ""), conn, src); !pass || tx == nil {
		t.Fatal("an unmatched CANCEL must reach the TU in a transaction")
	}
}

func TestServerReleaseUnanswered(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	src := caller.pc.LocalAddr()
	inv := request(t, "INVITE", "z9hG4bKrel", "")
	tx, _ := l.Request(inv, conn, src)
	tx.Release() // the TU dropped it: nothing would ever end it
	if s, _ := l.Len(); s != 0 {
		t.Fatal("an unanswered transaction was kept after Release")
	}
	if tx, pass := l.Request(request(t, "INVITE", "z9hG4bKrel", ""), conn, src); !pass || tx == nil {
		t.Fatal("the same INVITE after Release is not a new transaction")
	} else {
		_ = tx.Respond(sipmsg.NewResponseFromRequest(inv, 200, "OK", nil))
		tx.Release() // answered: stays for Timer L
	}
	if s, _ := l.Len(); s != 1 {
		t.Fatal("Release ended an answered transaction")
	}
}

func TestServerNonInviteReplaysFinal(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	src := caller.pc.LocalAddr()
	bye := request(t, "BYE", "z9hG4bKbye1", "b1")
	tx, _ := l.Request(bye, conn, src)
	if _, pass := l.Request(request(t, "BYE", "z9hG4bKbye1", "b1"), conn, src); pass {
		t.Fatal("a retransmitted BYE reached the TU")
	}
	if !caller.quiet(2 * testTimers.T1) {
		t.Fatal("a BYE retransmission before any response was answered")
	}
	_ = tx.Respond(sipmsg.NewResponseFromRequest(bye, 200, "OK", nil))
	caller.next(t)
	l.Request(request(t, "BYE", "z9hG4bKbye1", "b1"), conn, src)
	if c := code(t, caller.next(t)); c != 200 {
		t.Fatalf("the retransmission got %d, want the 200 again", c)
	}
	waitFor(t, "Timer J", func() bool { s, _ := l.Len(); return s == 0 })
	if tx2, pass := l.Request(request(t, "BYE", "z9hG4bKbye1", "b1"), conn, src); !pass || tx2 == nil {
		t.Fatal("after Timer J the same request is a new transaction")
	}
}

func TestServerKeys(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	src := caller.pc.LocalAddr()
	// RFC 2543 (no magic cookie): matched by From tag, Call-ID, CSeq, Via.
	old := request(t, "INVITE", "2543branch", "")
	l.Request(old, conn, src)
	if _, pass := l.Request(request(t, "INVITE", "2543branch", ""), conn, src); pass {
		t.Fatal("an RFC 2543 retransmission reached the TU")
	}
	// The same branch from another sent-by is another transaction.
	other := request(t, "INVITE", "z9hG4bKsame", "")
	l.Request(other, conn, src)
	moved := request(t, "INVITE", "z9hG4bKsame", "")
	moved.Via().Host = "192.0.2.9"
	if tx, pass := l.Request(moved, conn, src); !pass || tx == nil {
		t.Fatal("a request from another sent-by matched")
	}
	// Too broken to key: the TU answers it through a transaction without state.
	bad := request(t, "OPTIONS", "z9hG4bKbad", "")
	bad.RemoveHeader("CSeq")
	tx, pass := l.Request(bad, conn, src)
	if !pass || tx == nil {
		t.Fatal("a request without CSeq must reach the TU")
	}
	_ = tx.Respond(sipmsg.NewResponseFromRequest(bad, 400, "Bad Request", nil))
	if c := code(t, caller.next(t)); c != 400 {
		t.Fatalf("got %d", c)
	}
	if s, _ := l.Len(); s != 3 {
		t.Fatalf("%d server transactions, want 3 (the broken request keeps none)", s)
	}
}

// forwarded is a request as the proxy forwards it: our Via with branch on
// top of the caller's.
func forwarded(t *testing.T, method, branch string) *sipmsg.Request {
	r := request(t, method, "z9hG4bKcaller", "")
	via := &sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "127.0.0.1", Port: 5060}
	via.Params.Add("branch", branch)
	r.PrependHeader(via)
	return r
}

// answer is the gateway's response to req.
func answer(req *sipmsg.Request, code int, toTag string) *sipmsg.Response {
	r := sipmsg.NewResponseFromRequest(req, code, "R", nil)
	if toTag != "" && code > 100 {
		r.To().Params.Add("tag", toTag)
	}
	return r
}

func TestClientInviteTimersAB(t *testing.T) {
	l, gw, conn := newLayer(t), newPeer(t), serverConn(t)
	inv := forwarded(t, "INVITE", "z9hG4bKcA")
	start := time.Now()
	tx, err := l.Send(inv, conn, gw.pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-tx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("no Timer B")
	}
	if !errors.Is(tx.Err(), sipmsg.ErrTransactionTimeout) {
		t.Fatalf("err %v, want a timeout", tx.Err())
	}
	if d := time.Since(start); d < 64*testTimers.T1 {
		t.Fatalf("timed out after %v, before Timer B", d)
	}
	// Timer A doubles from T1: sends at 0, 1, 3, 7, 15, 31, 63 ×T1 within 64×T1.
	if n := len(gw.got); n < 5 || n > 7 {
		t.Fatalf("the INVITE went out %d times, want 7 (Timer A doubling)", n)
	}
	if _, c := l.Len(); c != 0 {
		t.Fatal("the timed-out transaction is still held")
	}
}

func TestClientInviteNon2xxAck(t *testing.T) {
	l, gw, conn := newLayer(t), newPeer(t), serverConn(t)
	inv := forwarded(t, "INVITE", "z9hG4bKcB")
	tx, err := l.Send(inv, conn, gw.pc.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	got := gw.next(t).(*sipmsg.Request)
	if !l.Response(answer(got, 180, "g1")) {
		t.Fatal("the 180 matched no transaction")
	}
	if r := <-tx.Responses(); r.StatusCode != 180 {
		t.Fatalf("got %d", r.StatusCode)
	}
	for len(gw.got) > 0 {
		<-gw.got
	}
	if !gw.quiet(4 * testTimers.T1) {
		t.Fatal("the INVITE still retransmitted after a provisional response")
	}
	busy := answer(got, 486, "g1")
	l.Response(busy)
	if r := <-tx.Responses(); r.StatusCode != 486 {
		t.Fatalf("got %d", r.StatusCode)
	}
	ack := gw.next(t).(*sipmsg.Request)
	tag, _ := ack.To().Params.Get("tag")
	b, _ := ack.Via().Params.Get("branch")
	if !ack.IsAck() || ack.CSeq().SeqNo != 1 || ack.CSeq().MethodName != sipmsg.ACK || tag != "g1" || b != "z9hG4bKcB" || len(ack.GetHeaders("Via")) != 1 {
		t.Fatalf("ACK for the 486 is not RFC 3261 §17.1.1.3's:\n%s", ack)
	}
	// A retransmitted 486 is not the TU's; it gets the ACK again.
	l.Response(answer(got, 486, "g1"))
	if m := gw.next(t).(*sipmsg.Request); !m.IsAck() {
		t.Fatalf("got %v", m)
	}
	if len(tx.Responses()) != 0 {
		t.Fatal("the retransmitted 486 was delivered")
	}
	tx.Terminate() // the TU is done: the transaction stays to absorb
	if _, c := l.Len(); c != 1 {
		t.Fatal("Terminate after the final dropped Timer D's state")
	}
	waitFor(t, "Timer D", func() bool { _, c := l.Len(); return c == 0 })
}

func TestClientInvite2xxRetransmissions(t *testing.T) {
	l, gw, conn := newLayer(t), newPeer(t), serverConn(t)
	inv := forwarded(t, "INVITE", "z9hG4bKcC")
	tx, _ := l.Send(inv, conn, gw.pc.LocalAddr())
	var again atomic.Int32
	tx.OnRetransmission(func(*sipmsg.Response) { again.Add(1) })
	got := gw.next(t).(*sipmsg.Request)
	l.Response(answer(got, 200, "g2"))
	if r := <-tx.Responses(); r.StatusCode != 200 {
		t.Fatalf("got %d", r.StatusCode)
	}
	l.Response(answer(got, 200, "g2"))
	l.Response(answer(got, 503, "g2")) // a stray non-2xx in Accepted: absorbed
	if again.Load() != 1 || len(tx.Responses()) != 0 {
		t.Fatalf("%d retransmissions to the hook, %d queued; want 1, 0", again.Load(), len(tx.Responses()))
	}
	if !gw.quiet(3 * testTimers.T1) {
		t.Fatal("something was sent after a 2xx (no ACK for a 2xx, no retransmission)")
	}
	waitFor(t, "Timer M", func() bool { _, c := l.Len(); return c == 0 })
}

func TestClientNonInviteTimersEFK(t *testing.T) {
	l, gw, conn := newLayer(t), newPeer(t), serverConn(t)
	opt := forwarded(t, "OPTIONS", "z9hG4bKcD")
	tx, _ := l.Send(opt, conn, gw.pc.LocalAddr())
	<-tx.Done()
	if !errors.Is(tx.Err(), sipmsg.ErrTransactionTimeout) {
		t.Fatalf("err %v, want a Timer F timeout", tx.Err())
	}
	// Timer E: 0, 1, 3, 7 ×T1, then every T2 (4 T1) up to 64 T1: ~18 sends.
	if n := len(gw.got); n < 12 {
		t.Fatalf("the OPTIONS went out %d times, want Timer E capped at T2", n)
	}

	bye := forwarded(t, "BYE", "z9hG4bKcE")
	tx, _ = l.Send(bye, conn, gw.pc.LocalAddr())
	for len(gw.got) > 0 {
		<-gw.got
	}
	got := gw.next(t).(*sipmsg.Request)
	l.Response(answer(got, 200, "g3"))
	if r := <-tx.Responses(); r.StatusCode != 200 {
		t.Fatalf("got %d", r.StatusCode)
	}
	if !l.Response(answer(got, 200, "g3")) || len(tx.Responses()) != 0 {
		t.Fatal("a retransmitted final must be absorbed (Timer K)")
	}
	for len(gw.got) > 0 {
		<-gw.got
	}
	if !gw.quiet(2 * testTimers.T2) {
		t.Fatal("the BYE still retransmitted after its final")
	}
	waitFor(t, "Timer K", func() bool { _, c := l.Len(); return c == 0 })
	if l.Response(answer(got, 200, "g3")) {
		t.Fatal("a response after Timer K matched")
	}
}

func TestClientAbandonedInviteAcks487(t *testing.T) {
	l, gw, conn := newLayer(t), newPeer(t), serverConn(t)
	inv := forwarded(t, "INVITE", "z9hG4bKcF")
	tx, _ := l.Send(inv, conn, gw.pc.LocalAddr())
	got := gw.next(t).(*sipmsg.Request)
	l.Response(answer(got, 180, "g4"))
	tx.Abandon()
	if len(tx.Responses()) != 0 {
		t.Fatal("Abandon left responses queued")
	}
	l.Response(answer(got, 487, "g4"))
	for {
		if m := gw.next(t); m.(*sipmsg.Request).IsAck() {
			break
		}
	}
	if len(tx.Responses()) != 0 {
		t.Fatal("a response was delivered after Abandon")
	}
}

func TestClientResponseMatching(t *testing.T) {
	l, gw, conn := newLayer(t), newPeer(t), serverConn(t)
	inv := forwarded(t, "INVITE", "z9hG4bKcG")
	if _, err := l.Send(inv, conn, gw.pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Send(forwarded(t, "INVITE", "z9hG4bKcG"), conn, gw.pc.LocalAddr()); !errors.Is(err, ErrExists) {
		t.Fatalf("a second transaction on one branch: %v", err)
	}
	got := gw.next(t).(*sipmsg.Request)
	other := answer(got, 200, "x")
	other.CSeq().MethodName = sipmsg.BYE // same branch, other method
	if l.Response(other) {
		t.Fatal("a response for another method matched")
	}
	noVia := answer(got, 200, "x")
	noVia.RemoveHeader("Via")
	if l.Response(noVia) {
		t.Fatal("a response without Via matched")
	}
	if _, err := l.Send(forwarded(t, "INVITE", "nocookie"), conn, gw.pc.LocalAddr()); err == nil {
		t.Fatal("a request without an RFC 3261 branch was sent")
	}
}

// TestParsedGarbageNeverPanics feeds the layer whatever the parser accepts
// from mangled messages: each gets an answer path or is dropped, never a
// panic.
func TestParsedGarbageNeverPanics(t *testing.T) {
	l, caller, conn := newLayer(t), newPeer(t), serverConn(t)
	base := "INVITE sip:b@x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKg\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
	for i := range len(base) {
		for _, mangled := range []string{base[:i] + base[i+1:], base[:i]} {
			m, err := sipmsg.ParseMessage([]byte(mangled))
			if err != nil {
				continue
			}
			switch m := m.(type) {
			case *sipmsg.Request:
				if tx, pass := l.Request(m, conn, caller.pc.LocalAddr()); pass && tx != nil {
					_ = tx.Respond(sipmsg.NewResponseFromRequest(m, 400, "Bad Request", nil))
				}
			case *sipmsg.Response:
				l.Response(m)
			}
		}
	}
}

// destination writes what sipgo's Response.Destination returns, for every
// form of top Via: received, rport with and without a value, no port, an
// IPv6 host, a destination set on the response, no Via.
func TestDestinationIsSipgos(t *testing.T) {
	vias := []string{
		"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1",
		"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1",
		"SIP/2.0/TLS host.example;branch=z9hG4bK1",
		"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;received=192.0.2.9;rport=6000",
		"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport",
		"SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK1;rport=x;received=",
		"SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK1;received=2001:db8::2",
	}
	for _, v := range vias {
		raw := "SIP/2.0 180 Ringing\r\nVia: " + v + "\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
		m, err := sipmsg.ParseMessage([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		res := m.(*sipmsg.Response)
		res.SetTransport("UDP")
		if got, want := string(destination(nil, res)), res.Destination(); got != want {
			t.Errorf("%s: %q, sipgo %q", v, got, want)
		}
		res.SetDestination("198.51.100.1:7000")
		if got, want := string(destination(nil, res)), res.Destination(); got != want {
			t.Errorf("%s with a destination: %q, sipgo %q", v, got, want)
		}
	}
	if got := destination(nil, sipmsg.NewResponse(200, "OK")); len(got) != 0 {
		t.Errorf("no Via: %q", got)
	}
}
