package sip

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// recordTap keeps what it is given.
type recordTap struct {
	mu   sync.Mutex
	msgs []tapped
}

type tapped struct{ transport, src, dst, msg string }

func (r *recordTap) Capture(transport string, src, dst net.Addr, msg []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, tapped{transport, src.String(), dst.String(), string(msg)})
}

func (r *recordTap) got() []tapped {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]tapped(nil), r.msgs...)
}

// TestTapStreamFraming: a TCP connection accepted through tapListener hands
// the tap whole messages however the stream is cut, skips keepalive CRLFs,
// and reports each write as one message.
func TestTapStreamFraming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &recordTap{}
	tl := &tapListener{Listener: ln, proto: "tcp", tap: tap}
	defer tl.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := tl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	m1 := "INVITE sip:a@b SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 4\r\n\r\nv=0\n"
	m2 := "BYE sip:a@b SIP/2.0\r\ni: 2\r\nl: 0\r\n\r\n"
	stream := "\r\n\r\n" + m1 + m2 + "\r\n" + m1[:10]
	go func() {
		// Cut the stream at every awkward place: one byte at a time.
		for i := range len(stream) {
			client.Write([]byte{stream[i]})
		}
	}()
	buf := make([]byte, 7)
	for read := 0; read < len(stream); {
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := server.Read(buf)
		if err != nil && err != io.EOF {
			t.Fatal(err)
		}
		read += n
	}
	reply := "SIP/2.0 200 OK\r\nCall-ID: 2\r\nContent-Length: 0\r\n\r\n"
	if _, err := server.Write([]byte(reply)); err != nil {
		t.Fatal(err)
	}
	cl, sv := client.LocalAddr().String(), ln.Addr().String()
	want := []tapped{{"tcp", cl, sv, m1}, {"tcp", cl, sv, m2}, {"tcp", sv, cl, reply}}
	got := tap.got()
	if len(got) != len(want) {
		t.Fatalf("tapped %d messages, want %d: %q", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("message %d: %q, want %q", i, got[i], want[i])
		}
	}
}
