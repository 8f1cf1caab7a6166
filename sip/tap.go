package sip

import (
	"bytes"
	"net"
	"strconv"
)

// Tap receives a copy of each SIP message a listener reads or writes, as
// the bytes on the wire (SIP capture, docs/operations.md "SIP capture
// (Homer/HEP)"; capture.Sender is the one in production). transport is
// udp, tcp or tls. Capture runs on the read loops and writers of the proxy:
// it must not block and must not keep msg.
//
// The tap sits on the listening sockets, the one place every message of a
// listener passes in each direction whatever the proxy mode: UDP
// datagrams both ways (udpConn's read loop and writes), and the TCP and TLS connections peers open to us
// (TLS in clear). Connections that sipgo dials itself, to a destination over
// TCP or TLS, do not pass through a listener and are not captured.
type Tap interface {
	Capture(transport string, src, dst net.Addr, msg []byte)
}

// tapSockets has every listener give its messages to tap: a UDP socket
// from its read loop and writes (udpConn), a stream listener through
// tapListener.
func (s *Server) tapSockets(tap Tap) {
	for _, c := range s.udpConns() {
		c.tap = tap
	}
	for _, k := range s.socks {
		if k.ln != nil {
			k.ln = &tapListener{Listener: k.ln, proto: k.proto, tap: tap}
		}
	}
}

// isMessage leaves out keepalives (CRLFs, zero bytes) that are no SIP message.
func isMessage(b []byte) bool { return len(bytes.Trim(b, "\r\n\x00")) > 0 }

// tapListener hands out accepted connections wrapped by tapConn.
type tapListener struct {
	net.Listener
	proto string
	tap   Tap
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return c, err
	}
	return &tapConn{Conn: c, proto: l.proto, tap: l.tap}, nil
}

// tapConn is a stream connection whose messages go to the tap. sipgo writes
// each message with one Write; reads come in arbitrary chunks, so they are
// framed again here (by Content-Length, as RFC 3261 §18.3 frames a stream).
type tapConn struct {
	net.Conn
	proto string
	tap   Tap
	in    []byte // read bytes not yet framed into a whole message
}

func (c *tapConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if n > 0 && isMessage(b[:n]) {
		c.tap.Capture(c.proto, c.LocalAddr(), c.RemoteAddr(), b[:n])
	}
	return n, err
}

// maxTapFrame bounds the bytes kept while a message is incomplete; a peer
// that sends more without a message boundary is not captured until the next
// read that starts one.
const maxTapFrame = 1 << 16

func (c *tapConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.in = append(c.in, b[:n]...)
		rest := c.frame(c.in)
		if len(rest) > maxTapFrame {
			rest = rest[:0]
		}
		c.in = c.in[:copy(c.in, rest)]
	}
	return n, err
}

// frame captures each whole message at the start of in and returns the rest.
func (c *tapConn) frame(in []byte) []byte {
	for {
		in = bytes.TrimLeft(in, "\r\n") // keepalives between messages
		end := bytes.Index(in, []byte("\r\n\r\n"))
		if end < 0 {
			return in
		}
		size := end + 4 + contentLength(in[:end])
		if size > len(in) {
			return in
		}
		c.tap.Capture(c.proto, c.RemoteAddr(), c.LocalAddr(), in[:size])
		in = in[size:]
	}
}

// contentLength reads Content-Length (or l) from a message's header part; 0
// when absent or unreadable.
func contentLength(head []byte) int {
	for _, line := range bytes.Split(head, []byte("\r\n"))[1:] {
		name, value, ok := bytes.Cut(line, []byte(":"))
		name = bytes.TrimSpace(name)
		if ok && (bytes.EqualFold(name, []byte("content-length")) || bytes.EqualFold(name, []byte("l"))) {
			if n, err := strconv.Atoi(string(bytes.TrimSpace(value))); err == nil && n >= 0 {
				return n
			}
			return 0
		}
	}
	return 0
}
