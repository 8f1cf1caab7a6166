package sip

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"
)

func parseRequest(t *testing.T, raw string) *sipmsg.Request {
	t.Helper()
	m, err := sipmsg.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	req, ok := m.(*sipmsg.Request)
	if !ok {
		t.Fatalf("not a request: %T", m)
	}
	return req
}

func tortureRequest(t *testing.T, name string) *sipmsg.Request {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(tortureDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return parseRequest(t, string(data))
}

func TestRequestFrom(t *testing.T) {
	const hand = "INVITE sip:+4930123@gw.example.net:5080;user=phone SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n" +
		"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1\r\n" +
		"To: <sip:bob@biloxi.example.com>\r\n" +
		"Call-ID:  abc@10.0.0.1 \r\n" +
		"CSeq: 1 INVITE\r\n" +
		"User-Agent: softphone/1.0\r\n" +
		"Authorization: Digest username=\"wrong\", realm=\"x\"\r\n" +
		"Proxy-Authorization: Digest realm=\"a, b\", username=\"al\\\"ice\", nonce=\"n\"\r\n" +
		"X-Tenant: t1\r\n" +
		"Content-Length: 0\r\n\r\n"
	tests := []struct {
		name             string
		req              *sipmsg.Request
		src, proto       string
		method, callID   string
		ruri, from, to   string
		auth, ua, srcIP  string
		srcPort          int
		header, hdrValue string
	}{
		{
			name: "hand-made", req: parseRequest(t, hand), src: "10.0.0.1:5062", proto: "UDP",
			method: "INVITE", callID: "abc@10.0.0.1", ruri: "sip:+4930123@gw.example.net:5080;user=phone",
			from: "sip:alice@atlanta.example.com", to: "sip:bob@biloxi.example.com",
			auth: `al"ice`, ua: "softphone/1.0", srcIP: "10.0.0.1", srcPort: 5062,
			header: "x-tenant", hdrValue: "t1",
		},
		{
			name: "esc01 (RFC 4475 3.1.1.3)", req: tortureRequest(t, "esc01.dat"), src: "[2001:db8::1]:5060", proto: "tcp",
			method: "INVITE", callID: "esc01.239409asdfakjkn23onasd0-3234",
			ruri: "sip:sips%3Auser%40example.com@example.net",
			from: "sip:I%20have%20spaces@example.net", to: "sip:%75se%72@example.com",
			srcIP: "2001:db8::1", srcPort: 5060,
		},
		{
			name: "semiuri (RFC 4475 3.1.1.9)", req: tortureRequest(t, "semiuri.dat"), src: "192.0.2.1:5060", proto: "udp",
			method: "OPTIONS", callID: "semiuri.0ha0isndaksdj", ruri: "sip:user;par=u%40example.net@example.com",
			from: "sip:caller@example.org", to: "sip:j_user@example.com", srcIP: "192.0.2.1", srcPort: 5060,
		},
		{
			name: "regaut01: unknown auth scheme gives no user", req: tortureRequest(t, "regaut01.dat"), src: "bad-source", proto: "udp",
			method: "REGISTER", callID: "regaut01.0ha0isndaksdj", ruri: "sip:example.com",
			from: "sip:j.user@example.com", to: "sip:j.user@example.com",
			header: "Authorization", hdrValue: "NoOneKnowsThisScheme opaque-data=here",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := RequestFrom(tc.req, tc.src, tc.proto)
			check := func(field, got, want string) {
				t.Helper()
				if got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			check("Method", r.Method, tc.method)
			check("CallID", r.CallID, tc.callID)
			check("RURI", r.RURI, tc.ruri)
			check("From", r.From, tc.from)
			check("To", r.To, tc.to)
			check("AuthUser", r.AuthUser, tc.auth)
			check("UserAgent", r.UserAgent, tc.ua)
			check("SrcIP", r.SrcIP, tc.srcIP)
			if r.SrcPort != tc.srcPort {
				t.Errorf("SrcPort = %d, want %d", r.SrcPort, tc.srcPort)
			}
			if want := map[string]string{"UDP": "udp", "tcp": "tcp", "udp": "udp"}[tc.proto]; r.Proto != want {
				t.Errorf("Proto = %q, want %q", r.Proto, want)
			}
			if tc.header != "" {
				v, ok := r.Header(tc.header)
				if !ok || v != tc.hdrValue {
					t.Errorf("Header(%s) = %q, %v; want %q", tc.header, v, ok, tc.hdrValue)
				}
			}
		})
	}
}

func TestDigestUsername(t *testing.T) {
	tests := []struct {
		in   string
		want string
		ok   bool
	}{
		{`Digest username="bob", realm="x"`, "bob", true},
		{`digest realm="a,b", username=carol`, "carol", true},
		{`Digest username="", realm="x"`, "", false},
		{`Basic Ym9iOnB3`, "", false},
		{`Digest`, "", false},
		{`Digest realm="unterminated, username="eve"`, "", false},
	}
	for _, tc := range tests {
		got, ok := digestUsername(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("digestUsername(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// sourceString is net.Addr.String for every source form.
func TestSourceString(t *testing.T) {
	for _, a := range []net.Addr{
		&net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5060},
		&net.UDPAddr{IP: net.IP{10, 0, 0, 1}, Port: 0},
		&net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5070},
		&net.UDPAddr{IP: net.ParseIP("fe80::1"), Port: 5070, Zone: "eth0"},
		&net.UDPAddr{Port: 5060},
		&net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 5060},
	} {
		if got := sourceString(a); got != a.String() {
			t.Errorf("%#v: %q, want %q", a, got, a.String())
		}
	}
}
