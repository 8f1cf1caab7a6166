package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// from_set: 1 with its default mode takes the same sources as Kamailio's
// ds_is_from_list("1"): address and port must match a destination of the set,
// the transport need not (mode 2, docs/configuration.md). Each request is sent
// from the same UDP socket to Kamailio 5.6 and to a node, and both answers'
// status lines must be equal.
func TestFromSetAsKamailio(t *testing.T) {
	kamailio, err := exec.LookPath("kamailio")
	if err != nil {
		t.Fatalf("kamailio is not installed (Debian: apt-get install kamailio): this test compares from_set with the real ds_is_from_list: %v", err)
	}
	ip := nextIP()
	listed := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	udpGw, tcpGw, unlisted := listed(), listed(), listed()
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(nextIP())})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	port := func(c *net.UDPConn) int { return c.LocalAddr().(*net.UDPAddr).Port }
	list := fmt.Sprintf("1 sip:%s:%d 0 0\n1 sip:%s:%d;transport=tcp 0 0\n2 sip:%s:%d 0 0\n",
		ip, port(udpGw), ip, port(tcpGw), ip, port(unlisted))
	listPath := filepath.Join(t.TempDir(), "dispatcher.list")
	if err := os.WriteFile(listPath, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	kam, _ := startKamailioCfg(t, kamailio, "kamailio_fromlist.cfg", nil, "@LIST@", listPath)
	node := startNode(t, nodeYAML("stateless", "", `- name: carriers
  match: {from_set: 1}
  reply: {code: 200, reason: From List}
- name: others
  reply: {code: 403, reason: Not From List}`), list)

	cases := []struct {
		name string
		from *net.UDPConn
		want string
	}{
		{"listed over udp", udpGw, "SIP/2.0 200 From List"},
		{"listed as tcp, sends over udp", tcpGw, "SIP/2.0 200 From List"},
		{"same address, port of set 2", unlisted, "SIP/2.0 403 Not From List"},
		{"unlisted address", other, "SIP/2.0 403 Not From List"},
	}
	for i, tc := range cases {
		kamGot := askFrom(t, tc.from, kam, i)
		got := askFrom(t, tc.from, node.SIPAddr, i)
		if kamGot != tc.want {
			t.Errorf("%s: Kamailio answered %q, the test expected %q", tc.name, kamGot, tc.want)
		}
		if got != kamGot {
			t.Errorf("%s: sipdispatch %q, Kamailio %q", tc.name, got, kamGot)
		}
	}
}

// askFrom sends an INVITE from c to addr and returns the final reply's
// status line.
func askFrom(t *testing.T, c *net.UDPConn, addr string, n int) string {
	t.Helper()
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	la := c.LocalAddr().String()
	msg := strings.ReplaceAll(fmt.Sprintf(`INVITE sip:+4930123@example.com SIP/2.0
Via: SIP/2.0/UDP %s;branch=z9hG4bK-fl-%d-%d
Max-Forwards: 70
From: <sip:carrier@example.com>;tag=fl%d
To: <sip:+4930123@example.com>
Call-ID: fromlist-%d-%s@test
CSeq: 1 INVITE
Contact: <sip:carrier@%s>
Content-Length: 0

`, la, n, time.Now().UnixNano(), n, n, strings.ReplaceAll(addr, ":", "-"), la), "\n", "\r\n")
	if _, err := c.WriteToUDP([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		k, _, err := c.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("no final reply from %s: %v", addr, err)
		}
		if line, _, _ := strings.Cut(string(buf[:k]), "\r\n"); !strings.HasPrefix(line, "SIP/2.0 1") {
			return line
		}
	}
}
