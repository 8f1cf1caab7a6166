package capture

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// decode parses a HEP v3 packet back into a Packet and the chunk types in
// wire order, checking every length on the way: the tests' independent
// reading of what Encode wrote.
func decode(b []byte) (Packet, []uint16, error) {
	var p Packet
	var order []uint16
	if len(b) < 6 || string(b[:4]) != "HEP3" {
		return p, nil, fmt.Errorf("no HEP3 header")
	}
	if n := int(binary.BigEndian.Uint16(b[4:])); n != len(b) {
		return p, nil, fmt.Errorf("total length %d, packet %d", n, len(b))
	}
	var src, dst netip.Addr
	var sport, dport uint16
	var sec, usec uint32
	for rest := b[6:]; len(rest) > 0; {
		if len(rest) < chunkHead {
			return p, nil, fmt.Errorf("short chunk header")
		}
		vendor, typ, n := binary.BigEndian.Uint16(rest), binary.BigEndian.Uint16(rest[2:]), int(binary.BigEndian.Uint16(rest[4:]))
		if vendor != 0 || n < chunkHead || n > len(rest) {
			return p, nil, fmt.Errorf("chunk %#x: vendor %d, length %d of %d", typ, vendor, n, len(rest))
		}
		v := rest[chunkHead:n]
		rest = rest[n:]
		order = append(order, typ)
		want := map[uint16]int{chunkFamily: 1, chunkIPProto: 1, chunkProtoT: 1, chunkSrcPort: 2, chunkDstPort: 2,
			chunkTimeSec: 4, chunkTimeUsec: 4, chunkNodeID: 4, chunkSrcIP4: 4, chunkDstIP4: 4, chunkSrcIP6: 16, chunkDstIP6: 16}
		if w, ok := want[typ]; ok && len(v) != w {
			return p, nil, fmt.Errorf("chunk %#x: %d bytes, want %d", typ, len(v), w)
		}
		switch typ {
		case chunkIPProto:
			p.Proto = Proto(v[0])
		case chunkSrcPort:
			sport = binary.BigEndian.Uint16(v)
		case chunkDstPort:
			dport = binary.BigEndian.Uint16(v)
		case chunkTimeSec:
			sec = binary.BigEndian.Uint32(v)
		case chunkTimeUsec:
			usec = binary.BigEndian.Uint32(v)
		case chunkNodeID:
			p.NodeID = binary.BigEndian.Uint32(v)
		case chunkSrcIP4, chunkSrcIP6:
			src, _ = netip.AddrFromSlice(v)
		case chunkDstIP4, chunkDstIP6:
			dst, _ = netip.AddrFromSlice(v)
		case chunkPayload:
			p.Payload = v
		case chunkCorrID:
			p.CallID = string(v)
		case chunkFamily, chunkProtoT:
		default:
			return p, nil, fmt.Errorf("unexpected chunk %#x", typ)
		}
	}
	p.Src, p.Dst = netip.AddrPortFrom(src, sport), netip.AddrPortFrom(dst, dport)
	p.Time = time.Unix(int64(sec), int64(usec)*1000)
	return p, order, nil
}

func TestEncodeRoundTrip(t *testing.T) {
	at := time.Unix(1764900000, 123456789)
	sipMsg := []byte("INVITE sip:a@b SIP/2.0\r\nCall-ID: c1\r\n\r\n")
	v4 := []uint16{chunkFamily, chunkIPProto, chunkSrcPort, chunkDstPort, chunkTimeSec, chunkTimeUsec, chunkProtoT, chunkNodeID, chunkSrcIP4, chunkDstIP4, chunkPayload}
	v6 := []uint16{chunkFamily, chunkIPProto, chunkSrcPort, chunkDstPort, chunkTimeSec, chunkTimeUsec, chunkProtoT, chunkNodeID, chunkSrcIP6, chunkDstIP6, chunkPayload}
	for _, tc := range []struct {
		name  string
		p     Packet
		order []uint16
		size  int
	}{
		{"udp ipv4 with call-id", Packet{Src: netip.MustParseAddrPort("127.0.0.1:5060"), Dst: netip.MustParseAddrPort("10.1.2.3:5080"),
			Proto: UDP, Time: at, NodeID: 7, CallID: "c1", Payload: sipMsg}, append(v4, chunkCorrID), 6 + 3*7 + 2*8 + 3*10 + 2*10 + 6 + len(sipMsg) + 8},
		{"tcp ipv4 without call-id", Packet{Src: netip.MustParseAddrPort("192.0.2.1:40000"), Dst: netip.MustParseAddrPort("192.0.2.2:5060"),
			Proto: TCP, Time: at, NodeID: 1, Payload: sipMsg}, v4, 6 + 3*7 + 2*8 + 3*10 + 2*10 + 6 + len(sipMsg)},
		{"tls ipv6", Packet{Src: netip.MustParseAddrPort("[2001:db8::1]:5061"), Dst: netip.MustParseAddrPort("[::1]:5061"),
			Proto: TLS, Time: at, NodeID: 0xffffffff, CallID: "x@y", Payload: sipMsg}, append(v6, chunkCorrID), 6 + 3*7 + 2*8 + 3*10 + 2*22 + 6 + len(sipMsg) + 9},
		{"ipv4-mapped source with ipv4 destination", Packet{Src: netip.MustParseAddrPort("[::ffff:127.0.0.1]:5060"), Dst: netip.MustParseAddrPort("127.0.0.2:5060"),
			Proto: UDP, Time: at, Payload: sipMsg}, v4, 6 + 3*7 + 2*8 + 3*10 + 2*10 + 6 + len(sipMsg)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte("keep")
			b, ok := Encode(bytes.Clone(prefix), &tc.p)
			if !ok {
				t.Fatal("Encode refused")
			}
			if !bytes.HasPrefix(b, prefix) {
				t.Fatal("Encode did not append")
			}
			b = b[len(prefix):]
			if len(b) != tc.size {
				t.Errorf("size %d, want %d", len(b), tc.size)
			}
			got, order, err := decode(b)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(order) != fmt.Sprint(tc.order) {
				t.Errorf("chunk order %v, want %v", order, tc.order)
			}
			want := tc.p
			want.Src = netip.AddrPortFrom(want.Src.Addr().Unmap(), want.Src.Port())
			want.Time = time.Unix(at.Unix(), 123456000) // microseconds on the wire
			if got.Src != want.Src || got.Dst != want.Dst || got.Proto != want.Proto || !got.Time.Equal(want.Time) ||
				got.NodeID != want.NodeID || got.CallID != want.CallID || !bytes.Equal(got.Payload, want.Payload) {
				t.Errorf("decoded %+v\nwant    %+v", got, want)
			}
		})
	}
}

// TestEncodeWire pins the first bytes: the header and the fixed-position
// chunks that sngrep 1.x reads without looking at their types.
func TestEncodeWire(t *testing.T) {
	p := Packet{Src: netip.MustParseAddrPort("127.0.0.1:5060"), Dst: netip.MustParseAddrPort("127.0.0.2:5061"),
		Proto: UDP, Time: time.Unix(0x01020304, 5000), NodeID: 9, Payload: []byte("X")}
	b, ok := Encode(nil, &p)
	if !ok {
		t.Fatal("Encode refused")
	}
	want := []byte{'H', 'E', 'P', '3', 0, 100,
		0, 0, 0, 1, 0, 7, 2, // family IPv4
		0, 0, 0, 2, 0, 7, 17, // UDP
		0, 0, 0, 7, 0, 8, 0x13, 0xc4, // src port 5060
		0, 0, 0, 8, 0, 8, 0x13, 0xc5, // dst port 5061
		0, 0, 0, 9, 0, 10, 1, 2, 3, 4, // seconds
		0, 0, 0, 10, 0, 10, 0, 0, 0, 5, // microseconds
		0, 0, 0, 11, 0, 7, 1, // SIP
		0, 0, 0, 12, 0, 10, 0, 0, 0, 9, // node id
		0, 0, 0, 3, 0, 10, 127, 0, 0, 1,
		0, 0, 0, 4, 0, 10, 127, 0, 0, 2,
		0, 0, 0, 15, 0, 7, 'X'}
	if !bytes.Equal(b, want) {
		t.Errorf("got  % x\nwant % x", b, want)
	}
}

func TestEncodeRefuses(t *testing.T) {
	v4, v6 := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("[::1]:1")
	for _, tc := range []struct {
		name string
		p    Packet
	}{
		{"mixed families", Packet{Src: v4, Dst: v6}},
		{"no source", Packet{Dst: v4}},
		{"over 65535 bytes", Packet{Src: v4, Dst: v4, Payload: []byte(strings.Repeat("x", MaxPacket))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if b, ok := Encode([]byte("keep"), &tc.p); ok || string(b) != "keep" {
				t.Errorf("Encode = %q, %v; want it refused and dst unchanged", b, ok)
			}
		})
	}
	// The largest payload that fits is accepted.
	p := Packet{Src: v4, Dst: v4, Payload: []byte(strings.Repeat("x", MaxPacket-(6+3*7+2*8+3*10+2*10+6)))}
	if b, ok := Encode(nil, &p); !ok || len(b) != MaxPacket {
		t.Errorf("largest packet: %d bytes, ok %v", len(b), ok)
	}
}

func TestHeaderScan(t *testing.T) {
	msg := []byte("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\ni:  short-form \r\nCSeq: 2 bye\r\n\r\nCall-ID: body")
	if got := string(header(msg, "call-id", "i")); got != "short-form" {
		t.Errorf("Call-ID %q", got)
	}
	if got := string(methodOf(msg)); got != "bye" {
		t.Errorf("response method %q", got)
	}
	if got := string(methodOf([]byte("ACK sip:x SIP/2.0\r\n\r\n"))); got != "ACK" {
		t.Errorf("request method %q", got)
	}
	if got := header([]byte("OPTIONS sip:x SIP/2.0\r\nTo: a\r\n\r\nCall-ID: in-body\r\n"), "call-id", "i"); got != nil {
		t.Errorf("Call-ID read from the body: %q", got)
	}
}
