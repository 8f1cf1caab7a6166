package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// proxy.wt_timer shortens how long a finished transaction absorbs
// retransmissions (docs/configuration.md): a request retransmitted right
// after its final reply gets the cached reply and never reaches the gateway
// again; retransmitted until it does, it reaches the gateway once the
// transaction is gone — after wt_timer (5 s), long before RFC 3261's 32 s.
func TestWaitTimerEndsFinishedTransactions(t *testing.T) {
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	cfg := strings.Replace(nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`), "fr_inv_timer: 30s", "fr_inv_timer: 30s, wt_timer: 5s", 1)
	n := startNodeAt(t, ip, cfg, listFile(1, gw))

	c, err := net.ListenPacket("udp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to, err := net.ResolveUDPAddr("udp", n.SIPAddr)
	if err != nil {
		t.Fatal(err)
	}
	la := c.LocalAddr().String()
	msg := strings.ReplaceAll(fmt.Sprintf(`OPTIONS sip:carrier@example.com SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-wt-1;rport
Max-Forwards: 70
From: <sip:tester@example.com>;tag=wt1
To: <sip:carrier@example.com>
Call-ID: wt-timer-1@%s
CSeq: 1 OPTIONS
Content-Length: 0

`, la, ip), "\n", "\r\n")
	// send writes the request (always the same bytes: a retransmission)
	// and waits up to wait for its final reply.
	buf := make([]byte, 65535)
	send := func(wait time.Duration) string {
		if _, err := c.WriteTo([]byte(msg), to); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(wait))
		for {
			k, _, err := c.ReadFrom(buf)
			if err != nil {
				return ""
			}
			if line, _, _ := strings.Cut(string(buf[:k]), "\r\n"); !strings.HasPrefix(line, "SIP/2.0 1") {
				return line
			}
		}
	}
	if got := send(5 * time.Second); got != "SIP/2.0 200 OK" {
		t.Fatalf("OPTIONS through the proxy: %q, want SIP/2.0 200 OK", got)
	}
	done := time.Now()
	if got := send(2 * time.Second); got != "SIP/2.0 200 OK" {
		t.Fatalf("retransmission within wt_timer: %q, want the cached 200", got)
	}
	if g := gw.Options(); g != 1 {
		t.Fatalf("gateway got %d OPTIONS, want 1 (the retransmission must be absorbed)", g)
	}
	waitFor(t, "the retransmission to reach the gateway as a new request", 20*time.Second, func() bool {
		send(250 * time.Millisecond)
		return gw.Options() >= 2
	})
	elapsed := time.Since(done)
	if elapsed < 4500*time.Millisecond || elapsed > 20*time.Second {
		t.Fatalf("transaction gone after %v, want about wt_timer (5s), far below RFC 3261's 32s", elapsed)
	}
	t.Logf("finished transaction gone after %v (wt_timer 5s)", elapsed.Round(10*time.Millisecond))
}
