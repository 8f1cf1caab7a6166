package dispatch

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Limits Kamailio's pack_dest applies to a destination URI.
const (
	maxHostLen   = 254 // DS_HN_SIZE - 2
	maxBareURI   = 500 // a URI without scheme longer than this is not fixed up
	minBareURILn = 5   // Kamailio fixes up only URIs longer than 4 bytes
)

// NewDestination builds a destination of set setID from a URI and the optional
// columns of a list line, validating all of them as Kamailio's pack_dest and
// ds_set_attrs do (see ParseAttrs for where sipdispatch is stricter). A URI
// without a sip:/sips: scheme gets "sip:" prepended, as Kamailio does. Source
// is left empty for the caller.
func NewDestination(setID int, uri string, flags Flags, priority int, attrs string) (Destination, error) {
	d := Destination{SetID: setID, Flags: flags, Priority: priority}
	u, err := parseDestURI(uri)
	if err != nil {
		return Destination{}, err
	}
	d.URI, d.Scheme, d.Host, d.Port, d.Transport = u.uri, u.scheme, u.host, u.port, u.transport
	a, err := ParseAttrs(attrs)
	if err != nil {
		return Destination{}, err
	}
	d.Attrs = a
	return d, nil
}

// destURI is a parsed destination URI.
type destURI struct {
	uri       string // the URI, "sip:" prepended when the source had no scheme
	scheme    string // "sip" or "sips"
	host      string // IPv6 without brackets
	port      int
	transport string
}

// parseDestURI parses a destination URI: sip:/sips:, optional user part, a host
// name, IPv4 or [IPv6] host, optional port, URI parameters (transport= is
// kept) and headers. Like Kamailio, text without a scheme is retried with
// "sip:" in front.
func parseDestURI(raw string) (destURI, error) {
	if raw == "" {
		return destURI{}, fmt.Errorf("bad URI %q: empty", raw)
	}
	if !hasSIPScheme(raw) {
		// Kamailio retries with "sip:" prepended only for 5..499 bytes; its
		// parser takes tel: and urn: URIs too, which cannot be gateways.
		if len(raw) < minBareURILn || len(raw) >= maxBareURI || hasOtherScheme(raw) {
			return destURI{}, fmt.Errorf("bad URI %q: not a sip: or sips: URI", raw)
		}
		u, err := parseSIPURI("sip:" + raw)
		if err != nil {
			return destURI{}, fmt.Errorf("bad URI %q: %w", raw, err)
		}
		return u, nil
	}
	u, err := parseSIPURI(raw)
	if err != nil {
		return destURI{}, fmt.Errorf("bad URI %q: %w", raw, err)
	}
	return u, nil
}

func hasOtherScheme(s string) bool {
	for _, p := range []string{"tel:", "tels:", "urn:"} {
		if len(s) >= len(p) && strings.EqualFold(s[:len(p)], p) {
			return true
		}
	}
	return false
}

func hasSIPScheme(s string) bool {
	return len(s) >= 4 && strings.EqualFold(s[:4], "sip:") ||
		len(s) >= 5 && strings.EqualFold(s[:5], "sips:")
}

// parseSIPURI parses a URI that starts with sip: or sips: (RFC 3261 §19.1.1).
func parseSIPURI(s string) (destURI, error) {
	u := destURI{uri: s}
	rest := s
	if strings.EqualFold(s[:4], "sip:") {
		u.scheme, rest = "sip", s[4:]
	} else {
		u.scheme, rest = "sips", s[5:]
	}
	// Headers (?...) do not matter for routing.
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i]
	}
	// The user part ends at the last '@' before the parameters.
	hostport, params, _ := strings.Cut(rest, ";")
	if i := strings.LastIndexByte(hostport, '@'); i >= 0 {
		if i == 0 {
			return destURI{}, fmt.Errorf("empty user part")
		}
		hostport = hostport[i+1:]
	}
	host, port, err := splitHostPort(hostport)
	if err != nil {
		return destURI{}, err
	}
	u.host, u.port = host, port
	if params != "" {
		for _, p := range strings.Split(params, ";") {
			name, value, _ := strings.Cut(p, "=")
			if name == "" {
				return destURI{}, fmt.Errorf("empty URI parameter")
			}
			if !strings.EqualFold(name, "transport") {
				continue
			}
			t := strings.ToLower(value)
			switch t {
			case "udp", "tcp", "tls", "sctp", "ws", "wss":
				u.transport = t
			default:
				return destURI{}, fmt.Errorf("unknown transport %q", value)
			}
		}
	}
	return u, nil
}

// splitHostPort splits host[:port] where host is a name, IPv4 or [IPv6].
func splitHostPort(hp string) (string, int, error) {
	var host, port string
	if strings.HasPrefix(hp, "[") {
		end := strings.IndexByte(hp, ']')
		if end < 0 {
			return "", 0, fmt.Errorf("unterminated IPv6 reference")
		}
		host, port = hp[1:end], hp[end+1:]
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", 0, fmt.Errorf("bad IPv6 address %q", host)
		}
		if port != "" && port[0] != ':' {
			return "", 0, fmt.Errorf("unexpected %q after IPv6 reference", port)
		}
	} else {
		i := strings.IndexByte(hp, ':')
		if i < 0 {
			host = hp
		} else {
			host, port = hp[:i], hp[i:]
		}
		if err := checkHostName(host); err != nil {
			return "", 0, err
		}
	}
	if len(host) > maxHostLen {
		return "", 0, fmt.Errorf("host longer than %d bytes", maxHostLen)
	}
	if port == "" {
		return host, 0, nil
	}
	n, err := strconv.Atoi(port[1:])
	if err != nil || n < 1 || n > 65535 || port[1] == '+' || port[1] == '-' {
		return "", 0, fmt.Errorf("bad port %q", port[1:])
	}
	return host, n, nil
}

// checkHostName accepts an IPv4 address or a host name of letters, digits,
// '-', '_' and '.'; an all-numeric name must be a valid IPv4 address.
func checkHostName(h string) error {
	if h == "" {
		return fmt.Errorf("missing host")
	}
	numeric := true
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= '0' && c <= '9', c == '.':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-', c == '_':
			numeric = false
		default:
			return fmt.Errorf("bad character %q in host %q", c, h)
		}
	}
	if numeric {
		if a, err := netip.ParseAddr(h); err != nil || !a.Is4() {
			return fmt.Errorf("bad IPv4 address %q", h)
		}
	}
	return nil
}
