package sip

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"
)

// The byte relay: stateless mode relays a response that came over UDP
// (RFC 3261 §16.11, §18.2.2) from the datagram's bytes, without sipgo's
// parse and re-serialisation, which were most of a relayed response's
// cost (docs/benchmarks.md, "Byte relay for responses"). scanResponse reads
// what relaying needs and checks the rest only as far as sipgo would; it
// declines whatever it is not sure about, which then takes the sipgo path
// (statelessRead). So it accepts nothing sipgo's parser rejects, and what it
// sends parses to what the sipgo path sends (relay_test.go checks both).

// scannedResponse is what scanResponse reads off a response.
type scannedResponse struct {
	status int
	via    [2]int   // the bytes to cut: the top Via's line, or its value and comma when others follow
	top    viaValue // the top Via: ours or not
	next   viaValue // the second: where the response goes
	callID []byte
	invite bool // CSeq method INVITE
}

// viaValue is one Via value as sipgo would parse it: Host without IPv6
// brackets, Port 0 when absent, and the two parameters §18.2.2 uses.
type viaValue struct {
	transport, host []byte
	port            int
	received, rport []byte
}

// scanResponse reads a response datagram for relayBytes; ok is false when
// data is not a response it is sure about: a request, folded header lines,
// a header sipgo parses that does not have the plain form checked here, a
// duplicate CSeq, Call-ID or Content-Length, a body that is not exactly
// Content-Length bytes, fewer than two Vias.
func scanResponse(data []byte) (r scannedResponse, ok bool) {
	const version = "SIP/2.0 "
	if len(data) > sipmsg.ParseMaxMessageLength || !bytes.HasPrefix(data, []byte(version)) {
		return r, false
	}
	line, pos, ok := crlfLine(data)
	if !ok || len(line) < len(version)+4 || line[len(version)+3] != ' ' {
		return r, false
	}
	if r.status, ok = digits(line[len(version):len(version)+3], 699); !ok || r.status < 100 {
		return r, false
	}
	if reason := line[len(version)+4:]; len(reason) >= 3 && bytes.EqualFold(reason[:3], []byte("sip")) {
		return r, false // sipgo takes "SIP/2.0 200 SIP..." for a request line
	}
	vias := 0
	var seenCSeq, seenLen bool
	clen := -1
	for {
		line, n, ok := crlfLine(data[pos:])
		if !ok {
			return r, false
		}
		if len(line) == 0 {
			pos += n
			break
		}
		if next := pos + n; next < len(data) && (data[next] == ' ' || data[next] == '\t') {
			return r, false // folded
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return r, false
		}
		value := bytes.Trim(line[colon+1:], " \t")
		var buf [16]byte
		name := lowerName(&buf, line[:colon])
		switch string(name) {
		case "via", "v":
			// One value or several, comma-separated (SIPp echoes them so);
			// each counts as a Via, as sipgo splits them.
			raw := line[colon+1:]
			start := pos + colon + 1 + len(raw) - len(bytes.TrimLeft(raw, " \t"))
			for at := start; ; {
				v, next, ok := scanVia(data[at : start+len(value)])
				if !ok {
					return r, false
				}
				switch vias {
				case 0:
					r.top, r.via = v, [2]int{pos, pos + n} // the line, when ours is its only value
					if next >= 0 {
						r.via = [2]int{start, start + next} // else ours and the comma after it
					}
				case 1:
					r.next = v
				}
				vias++
				if next < 0 {
					break
				}
				at += next
			}
		case "cseq":
			if seenCSeq {
				return r, false
			}
			seenCSeq = true
			sp := bytes.IndexByte(value, ' ')
			if sp < 1 || !isToken(value[sp+1:]) {
				return r, false
			}
			if _, ok := digits(value[:sp], 1<<31-1); !ok {
				return r, false
			}
			r.invite = string(value[sp+1:]) == string(sipmsg.INVITE)
		case "call-id", "i":
			if r.callID != nil || len(value) == 0 || !printable(value) {
				return r, false
			}
			r.callID = value
		case "content-length", "l":
			if seenLen {
				return r, false
			}
			seenLen = true
			if clen, ok = digits(value, 1<<32-1); !ok {
				return r, false
			}
		case "max-forwards":
			if _, ok := digits(value, 1<<32-1); !ok {
				return r, false
			}
		case "content-type", "c":
			if len(value) == 0 {
				return r, false
			}
		case "from", "f", "to", "t", "referred-by":
			if !plainAddresses(value, false) {
				return r, false
			}
		case "contact", "m", "route", "record-route", "refer-to":
			if !plainAddresses(value, true) {
				return r, false
			}
		default:
			if _, parsed := sipmsg.DefaultHeadersParser()[string(name)]; parsed {
				return r, false // a header sipgo parses that is not checked above
			}
		}
		pos += n
	}
	if vias < 2 || !seenCSeq || r.callID == nil || clen != len(data)-pos {
		return r, false
	}
	return r, true
}

// relayBytes relays a response scanResponse read as the sipgo path
// (relayable, relayUpstream) would, with the same side effects: a response
// without our Via on top is dropped and counted, a final reply to an INVITE
// ends the call's pending load entry, the reply is counted by its code.
// It rewrites data in place (the read loop's buffer, not used again once
// the hook has dealt with the datagram); with batch, the read loop's, the
// response joins it (a failure is logged at the flush). False, with nothing done, when the
// response goes anywhere but to an IP address over UDP: the sipgo path
// resolves names and writes to streams.
func (s *statelessForwarder) relayBytes(data []byte, r *scannedResponse, batch *sendBatch) bool {
	if !bytes.EqualFold(r.next.transport, []byte("UDP")) {
		return false
	}
	host, port := viaTarget(string(r.next.host), r.next.port, string(r.next.received), string(r.next.rport), "UDP")
	ip, err := netip.ParseAddr(host)
	k := s.socketFor("udp")
	if err != nil || ip.Zone() != "" || port < 1 || port > 65535 || k == nil || k.tx == nil {
		return false
	}
	if !s.relayFrom(string(r.top.host), r.top.port, r.invite, r.status, string(r.callID)) {
		return true
	}
	// Splice the top Via out: the lines before it move down onto it.
	cut := r.via[1] - r.via[0]
	copy(data[cut:r.via[1]], data[:r.via[0]])
	out := data[cut:]
	to := netip.AddrPortFrom(ip.Unmap(), uint16(port))
	s.obs.Reply(r.status)
	if batch != nil {
		batch.add(k.pc, out, net.UDPAddrFromAddrPort(to))
		return true
	}
	if w, ok := k.w.PacketConn.(addrPortWriter); ok {
		_, err = w.WriteToUDPAddrPort(out, to)
	} else {
		_, err = k.w.PacketConn.WriteTo(out, net.UDPAddrFromAddrPort(to))
	}
	if err != nil {
		s.log.Debug("sip: response not forwarded", "code", r.status, "err", err)
	}
	return true
}

// addrPortWriter writes a datagram without a net.Addr to allocate (udpConn).
type addrPortWriter interface {
	WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error)
}

// crlfLine returns the line at the start of data and its length with the
// CRLF; false without a CRLF or with a lone CR or LF in the line, which
// sipgo reads otherwise.
func crlfLine(data []byte) ([]byte, int, bool) {
	i := bytes.IndexByte(data, '\r')
	if i < 0 || i+1 >= len(data) || data[i+1] != '\n' || bytes.IndexByte(data[:i], '\n') >= 0 {
		return nil, 0, false
	}
	return data[:i], i + 2, true
}

// lowerName is name in lower case in buf; nil when longer than buf, and
// so than any header name sipgo parses.
func lowerName(buf *[16]byte, name []byte) []byte {
	if len(name) > len(buf) {
		return nil
	}
	for i, c := range name {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(name)]
}

// digits reads 1 to 10 decimal digits, at most max.
func digits(b []byte, max int) (int, bool) {
	if len(b) == 0 || len(b) > 10 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= max
}

// printable: visible ASCII, no space.
func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// scanVia reads the Via value at the start of b, of the plain form
// "SIP/2.0/T host[:port] *(;name[=value])": one space, token parameters
// without quotes or duplicates, an IPv6 host in brackets. next is where the
// value after it starts, past the comma and blanks, -1 at the end of b; a
// value followed by another needs a parameter, or sipgo reads the comma as
// part of the port.
func scanVia(b []byte) (v viaValue, next int, ok bool) {
	const proto = "SIP/2.0/"
	next = -1
	if i := bytes.IndexByte(b, ','); i >= 0 {
		next = i + 1 + len(b[i+1:]) - len(bytes.TrimLeft(b[i+1:], " \t"))
		b = b[:i]
	}
	if !bytes.HasPrefix(b, []byte(proto)) {
		return v, 0, false
	}
	b = b[len(proto):]
	sp := bytes.IndexByte(b, ' ')
	if sp < 1 || !alnum(b[:sp]) {
		return v, 0, false
	}
	v.transport, b = b[:sp], b[sp+1:]
	end := bytes.IndexByte(b, ';')
	if end < 0 {
		end = len(b)
	}
	hostport, params := b[:end], b[end:]
	if v.host, v.port, ok = splitHostPort(hostport); !ok || next >= 0 && len(params) == 0 {
		return v, 0, false
	}
	var names [8][]byte
	n := 0
	for len(params) > 0 {
		params = params[1:] // the ';'
		p := params
		if i := bytes.IndexByte(p, ';'); i >= 0 {
			p = p[:i]
		}
		params = params[len(p):]
		name, value, hasValue := bytes.Cut(p, []byte("="))
		if !isToken(name) || hasValue && !paramValue(value) || n == len(names) {
			return v, 0, false
		}
		for _, seen := range names[:n] {
			if string(seen) == string(name) {
				return v, 0, false
			}
		}
		names[n] = name
		n++
		switch string(name) {
		case "received":
			v.received = value
		case "rport":
			v.rport = value
		}
	}
	return v, next, true
}

// splitHostPort reads host[:port] with a host name, IPv4 address or
// bracketed IPv6 address (returned without brackets, as sipgo does).
func splitHostPort(b []byte) (host []byte, port int, ok bool) {
	rest := b
	if len(b) > 0 && b[0] == '[' {
		end := bytes.IndexByte(b, ']')
		if end < 2 || end > 41 || !ipv6Chars(b[1:end]) { // sipgo looks no further for the ']' of a URI
			return nil, 0, false
		}
		host, rest = b[1:end], b[end+1:]
	} else {
		end := bytes.IndexByte(b, ':')
		if end < 0 {
			end = len(b)
		}
		host, rest = b[:end], b[end:]
		if len(host) == 0 || !hostChars(host) {
			return nil, 0, false
		}
	}
	if len(rest) == 0 {
		return host, 0, true
	}
	if rest[0] != ':' || len(rest) > 6 {
		return nil, 0, false
	}
	port, ok = digits(rest[1:], 65535)
	return host, port, ok
}

func alnum(b []byte) bool {
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return true
}

func letters(b []byte) bool {
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

func hostChars(b []byte) bool {
	for _, c := range b {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

func ipv6Chars(b []byte) bool {
	for _, c := range b {
		if !('a' <= c && c <= 'f' || 'A' <= c && c <= 'F' || '0' <= c && c <= '9' || c == ':' || c == '.') {
			return false
		}
	}
	return true
}

// paramValue: a token, or an address with IPv6 colons and brackets.
func paramValue(b []byte) bool {
	for _, c := range b {
		if !tokenChar(c) && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

// plainAddresses checks the value of an address header (From, To, Contact,
// Route, ...) is of a form sipgo parses without error: each value
// [display-name] <URI> or a bare URI, with parameters; list allows several,
// separated by commas.
func plainAddresses(b []byte, list bool) bool {
	for {
		end, quoted, inURI := len(b), false, false
		for i, c := range b {
			switch {
			case c == '"':
				quoted = !quoted
			case quoted:
			case c == '<':
				inURI = true
			case c == '>':
				inURI = false
			case c == ',' && !inURI:
				end = i
			default:
				continue
			}
			if end < len(b) {
				break
			}
		}
		if !plainAddress(bytes.Trim(b[:end], " \t")) {
			return false
		}
		if end == len(b) {
			return true
		}
		if !list {
			return false
		}
		b = b[end+1:]
	}
}

// plainAddress checks one name-addr or addr-spec (RFC 3261 §20.10).
func plainAddress(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if b[0] == '"' {
		end := bytes.IndexByte(b[1:], '"') + 1
		if end < 1 || bytes.IndexByte(b[1:end], '\\') >= 0 {
			return false
		}
		b = bytes.TrimLeft(b[end+1:], " \t")
		if len(b) == 0 || b[0] != '<' {
			return false
		}
	}
	lt := bytes.IndexByte(b, '<')
	if lt < 0 {
		// addr-spec: the URI ends at the first ';', header parameters follow.
		uri, params, _ := bytes.Cut(b, []byte(";"))
		return plainURI(uri) && plainRest(params)
	}
	if bytes.IndexAny(b[:lt], "\";>") >= 0 {
		return false
	}
	b = b[lt+1:]
	gt := bytes.IndexByte(b, '>')
	return gt > 0 && plainURI(b[:gt]) && plainRest(b[gt+1:])
}

// plainURI checks a SIP or SIPS URI has a host (name, IPv4 or bracketed
// IPv6) and a numeric port if any; another scheme needs only a name.
func plainURI(b []byte) bool {
	colon := bytes.IndexByte(b, ':')
	if len(b) < 3 || colon < 1 || !letters(b[:colon]) { // sipgo's scheme: letters only
		return false
	}
	var buf [16]byte
	switch string(lowerName(&buf, b[:colon])) {
	case "sip", "sips":
	default:
		return plainRest(b[colon+1:])
	}
	b = bytes.TrimPrefix(b[colon+1:], []byte("//"))
	if at := bytes.IndexByte(b, '@'); at >= 0 {
		if !plainRest(b[:at]) {
			return false
		}
		b = b[at+1:]
	}
	end := bytes.IndexAny(b, ";?")
	if end < 0 {
		end = len(b)
	}
	_, _, ok := splitHostPort(b[:end])
	return ok && plainRest(b[end:])
}

// plainRest: the rest of an address or URI holds none of the characters
// that would change how sipgo splits it.
func plainRest(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
		switch c {
		case '<', '>', '"', ',', '[', ']', '@', '\\':
			return false
		}
	}
	return true
}

// viaTarget is where a response to the hop whose Via has sent-by host:port
// and the received and rport parameters goes (RFC 3261 §18.2.2, RFC 3581
// §4): received, else the sent-by host; rport, else the sent-by port, else
// the transport's default.
func viaTarget(host string, port int, received, rport, proto string) (string, int) {
	if received != "" {
		host = received
	}
	if rport != "" {
		if n, err := strconv.Atoi(rport); err == nil {
			port = n
		}
	}
	if port == 0 {
		port = sipmsg.DefaultPort(proto)
	}
	return strings.Trim(host, "[]"), port
}
