package capture

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string // "" = valid
	}{
		{"default", func(*Config) {}, ""},
		{"collector", func(c *Config) { c.HEP = "udp:127.0.0.1:9060"; c.Methods = []string{"INVITE", "bye"}; c.Sample = 0.25 }, ""},
		{"tcp collector", func(c *Config) { c.HEP = "tcp:127.0.0.1:9060" }, `capture.hep: "tcp:127.0.0.1:9060": want udp:HOST:PORT`},
		{"no port", func(c *Config) { c.HEP = "udp:homer" }, `capture.hep: "udp:homer": want udp:HOST:PORT`},
		{"bad port", func(c *Config) { c.HEP = "udp:homer:0" }, `capture.hep: "udp:homer:0": port must be 1..65535`},
		{"method", func(c *Config) { c.Methods = []string{"INVITE", "BY E"} }, `capture.methods[1]: "BY E": must be a SIP method name`},
		{"sample zero", func(c *Config) { c.Sample = 0 }, "capture.sample: 0: must be > 0 and <= 1"},
		{"sample over one", func(c *Config) { c.Sample = 1.5 }, "capture.sample: 1.5: must be > 0 and <= 1"},
		{"queue", func(c *Config) { c.Queue = 0 }, "capture.queue: 0: must be >= 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tc.want {
				t.Errorf("Validate() = %q, want %q", got, tc.want)
			}
		})
	}
}

func invite(callID string) []byte {
	return []byte("INVITE sip:a@b SIP/2.0\r\nCall-ID: " + callID + "\r\nCSeq: 1 INVITE\r\n\r\n")
}

var (
	peer  = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}
	local = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5060}
)

// TestCaptureFullQueueDrops: with nothing sending, Capture keeps returning
// at once and counts what the full queue refuses.
func TestCaptureFullQueueDrops(t *testing.T) {
	c := DefaultConfig()
	c.HEP, c.Queue = "udp:127.0.0.1:9", 4
	s, err := New(c, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	done := make(chan struct{})
	go func() {
		for i := range 1000 {
			s.Capture("udp", peer, local, invite(fmt.Sprint(i)))
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Capture blocked on a full queue")
	}
	if got := s.Dropped(); got != 996 {
		t.Errorf("dropped %d, want 996", got)
	}
	if s.Sent() != 0 {
		t.Errorf("sent %d without Run", s.Sent())
	}
}

// TestSenderSends runs the sender against a UDP socket and decodes what
// arrives; the methods filter keeps only INVITE and its responses.
func TestSenderSends(t *testing.T) {
	collector, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer collector.Close()
	c := DefaultConfig()
	c.HEP, c.NodeID, c.Methods = "udp:"+collector.LocalAddr().String(), 42, []string{"invite"}
	s, err := New(c, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx)
	msgs := [][]byte{
		[]byte("OPTIONS sip:x SIP/2.0\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\n\r\n"),
		invite("call-1"),
		[]byte("SIP/2.0 200 OK\r\nCall-ID: call-1\r\nCSeq: 1 INVITE\r\n\r\n"),
		[]byte("BYE sip:x SIP/2.0\r\nCall-ID: call-1\r\nCSeq: 2 BYE\r\n\r\n"),
	}
	tcpPeer := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: 40000}
	s.Capture("udp", peer, local, msgs[0])
	s.Capture("udp", peer, local, msgs[1])
	s.Capture("tls", local, tcpPeer, msgs[2])
	s.Capture("udp", peer, local, msgs[3])
	collector.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, MaxPacket)
	for i, want := range []struct {
		msg      []byte
		proto    Proto
		src, dst string
	}{{msgs[1], UDP, "127.0.0.1:5070", "127.0.0.1:5060"}, {msgs[2], TLS, "127.0.0.1:5060", "127.0.0.3:40000"}} {
		n, _, err := collector.ReadFrom(buf)
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		p, _, err := decode(buf[:n])
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		if string(p.Payload) != string(want.msg) || p.Proto != want.proto || p.Src.String() != want.src ||
			p.Dst.String() != want.dst || p.NodeID != 42 || p.CallID != "call-1" || time.Since(p.Time) > time.Minute {
			t.Errorf("packet %d: %+v", i, p)
		}
	}
	collector.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if n, _, err := collector.ReadFrom(buf); err == nil {
		t.Errorf("filtered message sent: %q", buf[:n])
	}
	if s.Sent() != 2 || s.Dropped() != 0 {
		t.Errorf("sent %d dropped %d, want 2 and 0", s.Sent(), s.Dropped())
	}
}

// TestSampleByCall: a sampled call is captured whole or not at all, and the
// share captured is near the configured one.
func TestSampleByCall(t *testing.T) {
	c := DefaultConfig()
	c.HEP, c.Sample, c.Queue = "udp:127.0.0.1:9", 0.25, 100000
	s, err := New(c, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer s.conn.Close()
	kept := 0
	for i := range 4000 {
		id := fmt.Sprintf("%d@host", i)
		a, b := s.wanted(invite(id)), s.wanted([]byte("SIP/2.0 180 Ringing\r\ni: "+id+"\r\nCSeq: 1 INVITE\r\n\r\n"))
		if a != b {
			t.Fatalf("call %s: INVITE sampled %v, its 180 %v", id, a, b)
		}
		if a {
			kept++
		}
	}
	if kept < 800 || kept > 1200 {
		t.Errorf("sampled %d of 4000 calls at 0.25", kept)
	}
}

// BenchmarkCapture is the cost Capture adds to each message on the proxy's
// read loops and writers (copy and queue; with methods, the header scan),
// with the sender running and writing to a local socket; "dropped/op" shows
// whether the sender kept up.
func BenchmarkCapture(b *testing.B) {
	msg := append(invite("bench-call@host"), make([]byte, 700)...)
	sink, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	for _, methods := range [][]string{nil, {"INVITE"}} {
		b.Run(fmt.Sprintf("methods=%v", methods), func(b *testing.B) {
			c := DefaultConfig()
			c.HEP, c.Methods = "udp:"+sink.LocalAddr().String(), methods
			s, err := New(c, slog.Default())
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go s.Run(ctx)
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				s.Capture("udp", peer, local, msg)
				n++
			}
			b.ReportMetric(float64(s.Dropped())/float64(n), "dropped/op")
		})
	}
}
