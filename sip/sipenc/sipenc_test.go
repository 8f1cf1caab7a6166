package sipenc

import (
	"os"
	"path/filepath"
	"testing"

	sipmsg "github.com/emiago/sipgo/sip"
)

// same fails t unless Append writes m byte for byte as sipgo does.
func same(t *testing.T, name string, m sipmsg.Message) {
	t.Helper()
	want := m.String()
	if got := string(Append([]byte("prefix"), m)); got != "prefix"+want {
		t.Errorf("%s:\n got %q\nwant %q", name, got[len("prefix"):], want)
	}
}

// Every RFC 4475 torture message sipgo parses, and every one as the proxy
// changes it (our Via with a port and parameters, Record-Route), comes out as
// sipgo writes it.
func TestAppendTorture(t *testing.T) {
	files, err := filepath.Glob("../testdata/torture/*.dat")
	if err != nil || len(files) < 40 {
		t.Fatalf("torture messages: %d, %v", len(files), err)
	}
	parsed := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := sipmsg.ParseMessage(data)
		if err != nil {
			continue
		}
		parsed++
		name := filepath.Base(f)
		same(t, name, m)
		for _, h := range m.(interface{ Headers() []sipmsg.Header }).Headers() {
			if got := string(AppendHeader(nil, h)); got != h.String() {
				t.Errorf("%s: AppendHeader %q, sipgo %q", name, got, h.String())
			}
		}
		via := &sipmsg.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: "192.0.2.1", Port: 5060}
		via.Params.Add("branch", "z9hG4bKsd1")
		via.Params.Add("received", "198.51.100.7")
		via.Params.Add("rport", "")
		m.PrependHeader(via)
		rr := &sipmsg.RecordRouteHeader{Address: sipmsg.Uri{Scheme: "sip", Host: "2001:db8::1", Port: 5070}}
		rr.Address.UriParams.Add("transport", "udp")
		rr.Address.UriParams.Add("lr", "")
		rr.Address.UriParams.Add("ds", "12")
		m.PrependHeader(rr)
		same(t, name+" forwarded", m)
	}
	if parsed < 30 {
		t.Fatalf("only %d torture messages parsed", parsed)
	}
}

// The forms the torture messages may miss: IPv6 hosts (bare, bracketed,
// IPv4-mapped, zoned), display names, quoted parameter values, URI
// headers, a password, a wildcard Contact, a non-SIP URI, compact header
// names, responses with and without a body.
func TestAppendForms(t *testing.T) {
	msgs := map[string]string{
		"ipv6": "INVITE sip:alice:secret@[2001:db8::2]:5080;transport=tcp?subject=hi%20there&x=y SIP/2.0\r\n" +
			"Via: SIP/2.0/TCP [2001:db8::9]:5060;branch=z9hG4bK1;received=2001:db8::9\r\n" +
			"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2;rport\r\n" +
			"From: \"Alice A\" <sip:alice@atlanta.com>;tag=1;x=\"a b\"\r\n" +
			"To: <sips:bob@[::ffff:192.0.2.4]>\r\n" +
			"Contact: *\r\n" +
			"Route: <sip:p1.example.com;lr>, <sip:[fe80::1]:5062;lr>\r\n" +
			"Call-ID: abc@host\r\nCSeq: 4711 INVITE\r\nMax-Forwards: 7\r\n" +
			"Expires: 3600\r\nX-Custom:   spaced value  \r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
		"tel": "INVITE tel:+1-201-555-0123;phone-context=x SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK3\r\nFrom: <tel:+12015550123>;tag=a\r\nTo: <urn:service:sos>\r\n" +
			"Call-ID: t@h\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
		"response": "SIP/2.0 183 Session Progress\r\n" +
			"Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK4\r\nRecord-Route: <sip:10.0.0.2;lr;ds=3>\r\n" +
			"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nContact: \"GW\" <sip:gw@10.0.0.3:5080>;expires=60\r\n" +
			"Call-ID: r@h\r\nCSeq: 1 INVITE\r\nContent-Length: 3\r\n\r\nabc",
		"no reason": "SIP/2.0 200 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK5\r\nCall-ID: x\r\nCSeq: 2 BYE\r\n\r\n",
	}
	for name, raw := range msgs {
		m, err := sipmsg.ParseMessage([]byte(raw))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		same(t, name, m)
		switch m := m.(type) {
		case *sipmsg.Request:
			m.CompactHeaders = true
		case *sipmsg.Response:
			m.CompactHeaders = true
		}
		same(t, name+" compact", m)
	}
	// Built, not parsed: no headers at all, an empty body that is not nil.
	r := sipmsg.NewRequest(sipmsg.OPTIONS, sipmsg.Uri{Host: "example.com"})
	same(t, "bare", r)
	r.SetBody([]byte{})
	same(t, "empty body", r)
	res := sipmsg.NewResponseFromRequest(r, 100, "Trying", nil)
	same(t, "local reply", res)
}

// Writing a forwarded INVITE allocates nothing when the buffer is large
// enough: sipgo's StringWrite allocates for every port and parameter list.
func TestAppendAllocs(t *testing.T) {
	raw := "INVITE sip:service@127.0.0.1:5060;user=phone SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport=5070;received=127.0.0.1\r\n" +
		"Record-Route: <sip:127.0.0.1:5060;transport=udp;lr;ds=1>\r\n" +
		"From: sipp <sip:sipp@127.0.0.1:5070>;tag=1\r\nTo: <sip:service@127.0.0.1:5060>\r\n" +
		"Call-ID: 1@h\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5070\r\nMax-Forwards: 69\r\n" +
		"Content-Length: 129\r\n\r\n" + string(make([]byte, 129))
	m, err := sipmsg.ParseMessage([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(100, func() { buf = Append(buf[:0], m) }); n != 0 {
		t.Errorf("%v allocations per message", n)
	}
}
