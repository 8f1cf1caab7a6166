// Package capture sends copies of the proxy's SIP messages to a HEP v3
// collector (Homer, sngrep), like Kamailio's siptrace module: the capture
// key of docs/configuration.md, set up as docs/operations.md ("SIP capture
// (Homer/HEP)") shows. Encode is the pure HEP v3 encoder; Sender queues
// messages without blocking and sends them from one goroutine.
package capture

import (
	"encoding/binary"
	"net/netip"
	"time"
)

// Proto is the HEP "IP protocol ID" chunk of a captured message.
type Proto uint8

// The transports a message can be captured on. TLS has no IP protocol of its
// own; Kamailio's siptrace marks it with IPPROTO_IDP (22), which Homer shows
// as TLS, and so do we.
const (
	TCP Proto = 6
	UDP Proto = 17
	TLS Proto = 22
)

// ProtoOf maps the proxy's transport names (udp, tcp, tls) to a Proto.
func ProtoOf(transport string) (Proto, bool) {
	switch transport {
	case "udp", "UDP":
		return UDP, true
	case "tcp", "TCP":
		return TCP, true
	case "tls", "TLS":
		return TLS, true
	}
	return 0, false
}

// Packet is one captured SIP message with what HEP v3 carries about it.
type Packet struct {
	Src, Dst netip.AddrPort
	Proto    Proto
	Time     time.Time
	NodeID   uint32 // capture agent id (capture.node_id)
	CallID   string // correlation id; "" leaves the chunk out
	Payload  []byte // the SIP message as on the wire
}

// HEP v3 chunk types (vendor 0, the generic chunks of the HEP3 spec).
const (
	chunkFamily   = 0x0001 // uint8: 2 IPv4, 10 IPv6
	chunkIPProto  = 0x0002 // uint8: IP protocol id
	chunkSrcIP4   = 0x0003
	chunkDstIP4   = 0x0004
	chunkSrcIP6   = 0x0005
	chunkDstIP6   = 0x0006
	chunkSrcPort  = 0x0007 // uint16
	chunkDstPort  = 0x0008 // uint16
	chunkTimeSec  = 0x0009 // uint32, Unix seconds
	chunkTimeUsec = 0x000a // uint32, microseconds within the second
	chunkProtoT   = 0x000b // uint8: payload type, 1 = SIP
	chunkNodeID   = 0x000c // uint32: capture agent id
	chunkPayload  = 0x000f // the captured message
	chunkCorrID   = 0x0011 // string: internal correlation id (Call-ID)

	protoSIP = 1
	afInet   = 2
	afInet6  = 10

	chunkHead = 6 // vendor id, type id, length: uint16 each
	// MaxPacket is the largest HEP v3 packet: the total length is a uint16.
	MaxPacket = 0xffff
)

// Encode appends p as one HEP v3 packet to dst and returns it; it reports
// false (and dst unchanged) when the packet would exceed MaxPacket or the
// addresses are not both IPv4 or both IPv6.
//
// The chunk order is the one Kamailio's siptrace writes: family, IP
// protocol, ports, time, payload type and node id, then the addresses, then
// the payload. HEP chunks may come in any order, but sngrep 1.x reads them at
// fixed positions; the correlation id goes last, after the payload, where a
// reader that stops at the payload does not miss it.
func Encode(dst []byte, p *Packet) ([]byte, bool) {
	src, dstIP := p.Src.Addr().Unmap(), p.Dst.Addr().Unmap()
	if src.Is4() != dstIP.Is4() || !src.IsValid() || !dstIP.IsValid() {
		return dst, false
	}
	ipLen, family, srcChunk, dstChunk := 4, byte(afInet), uint16(chunkSrcIP4), uint16(chunkDstIP4)
	if !src.Is4() {
		ipLen, family, srcChunk, dstChunk = 16, afInet6, chunkSrcIP6, chunkDstIP6
	}
	total := 6 + // "HEP3" and the total length
		3*(chunkHead+1) + 2*(chunkHead+2) + 3*(chunkHead+4) + // uint8, uint16, uint32 chunks
		2*(chunkHead+ipLen) + chunkHead + len(p.Payload)
	if p.CallID != "" {
		total += chunkHead + len(p.CallID)
	}
	if total > MaxPacket {
		return dst, false
	}
	b := append(dst, "HEP3"...)
	b = binary.BigEndian.AppendUint16(b, uint16(total))
	head := func(typ uint16, n int) {
		b = binary.BigEndian.AppendUint16(b, 0)
		b = binary.BigEndian.AppendUint16(b, typ)
		b = binary.BigEndian.AppendUint16(b, uint16(chunkHead+n))
	}
	u8 := func(typ uint16, v byte) { head(typ, 1); b = append(b, v) }
	u16 := func(typ uint16, v uint16) { head(typ, 2); b = binary.BigEndian.AppendUint16(b, v) }
	u32 := func(typ uint16, v uint32) { head(typ, 4); b = binary.BigEndian.AppendUint32(b, v) }
	raw := func(typ uint16, v []byte) { head(typ, len(v)); b = append(b, v...) }

	u8(chunkFamily, family)
	u8(chunkIPProto, byte(p.Proto))
	u16(chunkSrcPort, p.Src.Port())
	u16(chunkDstPort, p.Dst.Port())
	u32(chunkTimeSec, uint32(p.Time.Unix()))
	u32(chunkTimeUsec, uint32(p.Time.Nanosecond()/1000))
	u8(chunkProtoT, protoSIP)
	u32(chunkNodeID, p.NodeID)
	raw(srcChunk, src.AsSlice())
	raw(dstChunk, dstIP.AsSlice())
	raw(chunkPayload, p.Payload)
	if p.CallID != "" {
		head(chunkCorrID, len(p.CallID))
		b = append(b, p.CallID...)
	}
	return b, true
}
