package dispatch

import (
	"strconv"
	"strings"
)

// Flags are a destination's state bits, numbered as Kamailio's DS_*_DST flags
// so that list files and database rows carry over unchanged.
type Flags uint32

// Destination state flags (Kamailio dispatcher.h).
const (
	FlagInactive Flags = 1  // DS_INACTIVE_DST: not selected
	FlagTrying   Flags = 2  // DS_TRYING_DST: failing, still selected until the threshold
	FlagDisabled Flags = 4  // DS_DISABLED_DST: administratively off, overrides all
	FlagProbing  Flags = 8  // DS_PROBING_DST: keepalives are sent to it
	FlagNoDNS    Flags = 16 // DS_NODNSARES_DST: address not resolved at load
	FlagNoPing   Flags = 32 // DS_NOPING_DST: never ping

	// stateMask holds the bits that describe the selection state.
	stateMask = FlagInactive | FlagTrying | FlagDisabled
)

// Skip reports whether a destination in this state must not be selected
// (Kamailio's ds_skip_dst: inactive or disabled).
func (f Flags) Skip() bool { return f&(FlagInactive|FlagDisabled) != 0 }

// Letters renders the state as Kamailio's RPC does: one of A, I, T, D followed
// by P (probing) or X.
func (f Flags) Letters() string {
	var s string
	switch {
	case f&FlagDisabled != 0:
		s = "D"
	case f&FlagInactive != 0:
		s = "I"
	case f&FlagTrying != 0:
		s = "T"
	default:
		s = "A"
	}
	if f&FlagProbing != 0 {
		return s + "P"
	}
	return s + "X"
}

// Attrs are a destination's attributes (the list file's fifth column). Known
// names are parsed into fields; every pair, known or not, stays in Pairs in
// file order so that nothing is lost and the RPC can show the original text.
type Attrs struct {
	Raw      string // the attribute text as written, less one trailing ";" (Kamailio's BODY)
	DUID     string // duid: stable destination id, carries state over reloads
	Weight   int    // weight: percent share for algorithm 9 (and 15, 16)
	RWeight  int    // rweight: relative weight 1..100 for algorithm 11
	MaxLoad  int    // maxload: upper bound of concurrent calls for algorithm 10; 0 = none
	CC       int    // cc: congestion control for algorithm 11 (with weight) and 13
	Latency  int    // latency: initial latency hint, ms
	Socket   string // socket: local socket to send from, proto:host:port
	Sockname string // sockname: name of the local socket to send from (wins over socket)
	// PingSocket (ping_socket) is the local socket keepalives leave from.
	PingSocket string
	PingFrom   string // ping_from: From URI of this destination's keepalives
	OBProxy    string // obproxy: outbound proxy URI of this destination's keepalives
	Pairs      []Attr // every name=value pair in order
}

// Attr is one name=value pair of an attribute string.
type Attr struct{ Name, Value string }

// Get returns the value of the first pair named name (case-insensitive).
func (a Attrs) Get(name string) (string, bool) {
	for _, p := range a.Pairs {
		if strings.EqualFold(p.Name, name) {
			return p.Value, true
		}
	}
	return "", false
}

// Destination is one gateway of a set, as loaded from a list file or table.
type Destination struct {
	SetID    int
	URI      string // as written in the source, "sip:" prepended when it had no scheme (as Kamailio)
	Flags    Flags  // initial flags from the source
	Priority int
	Attrs    Attrs

	// Parsed from URI.
	Scheme    string // "sip" or "sips"
	Host      string // host name, IPv4, or IPv6 without brackets
	Port      int    // 0 when the URI names none
	Transport string // lower-case transport param, "" when absent

	// Source is "file:line" (or "table:id") for error messages and check output.
	Source string
}

// HostPort returns host:port with the default port of the scheme when the URI
// names none, bracketing IPv6 literals.
func (d *Destination) HostPort() string {
	// Written into one buffer: the proxy asks for every request it forwards.
	var buf [64]byte
	b := buf[:0]
	if strings.IndexByte(d.Host, ':') >= 0 {
		b = append(b, '[')
		b = append(b, d.Host...)
		b = append(b, ']')
	} else {
		b = append(b, d.Host...)
	}
	b = append(b, ':')
	return string(strconv.AppendInt(b, int64(d.EffectivePort()), 10))
}

// EffectivePort is the URI's port, or the default of its scheme and transport
// (5061 for sips or TLS, else 5060).
func (d *Destination) EffectivePort() int {
	if d.Port != 0 {
		return d.Port
	}
	if d.Scheme == "sips" || d.Transport == "tls" {
		return 5061
	}
	return 5060
}

// EffectiveTransport is the URI's transport parameter, or the default of its
// scheme ("tls" for sips, else "udp").
func (d *Destination) EffectiveTransport() string {
	if d.Transport != "" {
		return d.Transport
	}
	if d.Scheme == "sips" {
		return "tls"
	}
	return "udp"
}

// Key identifies a destination across reloads: its duid when it has one, else
// set id and URI (docs/operations.md, "dispatcher.reload").
func (d *Destination) Key() string {
	if d.Attrs.DUID != "" {
		return "duid:" + d.Attrs.DUID
	}
	return "uri:" + strconv.Itoa(d.SetID) + ":" + d.URI
}

// Set is a destination set in selection order: higher priority first, equal
// priorities in reverse source order (Kamailio inserts at the head).
type Set struct {
	ID    int
	Dests []Destination
}
