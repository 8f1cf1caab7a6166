package dispatch

import (
	"errors"
	"strings"
)

// ErrNoHashKey means a hash algorithm found nothing it can hash: a From, To
// or Request-URI that does not parse, or an empty hash_pvar expansion.
// Kamailio fails the selection in these cases, and so does Select.
var ErrNoHashKey = errors.New("no hash key in request")

// sipWhitespace is what Kamailio's trim() removes.
const sipWhitespace = " \t\r\n"

// CallIDKey is the key algorithms 0 and 16 hash: the Call-ID without
// surrounding whitespace (ds_hash_callid trims it).
func CallIDKey(callID string) string { return strings.Trim(callID, sipWhitespace) }

// AuthUserKey is the key algorithm 5 hashes: the user part of a digest
// username, as Kamailio's digest parser splits it (a username longer than two
// characters loses "@domain" and then anything up to a ':'), trimmed. ok is
// false when there is no user, and algorithm 5 falls back to round-robin.
func AuthUserKey(username string) (key string, ok bool) {
	u := username
	if len(u) > 2 {
		if at := strings.IndexByte(u, '@'); at >= 0 {
			u = u[:at]
		}
		if c := strings.IndexByte(u, ':'); c >= 0 {
			u = u[c+1:]
		}
	}
	u = strings.Trim(u, sipWhitespace)
	return u, u != ""
}

// URIHashKeys returns the two keys algorithms 1-3 hash for a URI, as
// Kamailio's get_uri_hash_keys: user is the URI's user part ("" when it has
// none) and hostport is the host followed by ":port" as written when the URI
// names a port other than its scheme's default (5060 for sip, 5061 for
// sips). With userOnly (Config.Flags&1) hostport is "". ok is false when the
// URI does not parse; the strings are slices of uri, nothing is allocated.
func URIHashKeys(uri string, userOnly bool) (user, hostport string, ok bool) {
	u, ok := parseURIParts(uri)
	if !ok {
		return "", "", false
	}
	if userOnly {
		return u.user, "", true
	}
	return u.user, u.key2, true
}

// uriParts are the pieces of a sip:, sips: or tel: URI that hashing and
// templates read; every string is a slice of the parsed text.
type uriParts struct {
	user    string // "" when the URI has no user part
	host    string // IPv6 references keep their brackets, as in Kamailio; "" for tel:
	port    string // digits as written; "" when absent
	hasPort bool   // a ':' followed the host (the port text may still be "")
	params  string // text after the first ';' up to '?', "" when none
	key2    string // host plus ":port" unless the port is the scheme's default
	sips    bool
}

// parseURIParts splits a URI the way Kamailio's parse_uri does for the cases
// that matter to hashing: scheme (case-insensitive), user up to the first '@'
// (a ':' in it starts the password), bracketed IPv6 hosts, a numeric port of
// at most five digits, and tel: URIs whose number is the user. It rejects
// what parse_uri rejects on those paths (no host, empty user before '@',
// brackets in the user, stray characters after "]", a non-numeric port) and
// is more lenient about host characters. It never panics.
func parseURIParts(uri string) (uriParts, bool) {
	var p uriParts
	s := strings.Trim(uri, sipWhitespace)
	if len(s) < 5 {
		return p, false
	}
	var rest string
	switch {
	case strings.EqualFold(s[:4], "sip:"):
		rest = s[4:]
	case strings.EqualFold(s[:5], "sips:"):
		rest, p.sips = s[5:], true
	case strings.EqualFold(s[:4], "tel:"):
		// parse_uri moves a tel: number into the user and empties the host.
		rest = s[4:]
		end := strings.IndexAny(rest, ";?")
		if end < 0 {
			end = len(rest)
		}
		p.user = rest[:end]
		if end < len(rest) && rest[end] == ';' {
			p.params = paramsOf(rest[end+1:])
		}
		return p, true
	default:
		return p, false
	}

	if at := strings.IndexByte(rest, '@'); at >= 0 {
		user := rest[:at]
		if c := strings.IndexByte(user, ':'); c >= 0 {
			user = user[:c] // the rest is the password
		}
		if user == "" || strings.ContainsAny(user, "[]") {
			return p, false
		}
		p.user = user
		rest = rest[at+1:]
	}

	var hostEnd int
	if rest != "" && rest[0] == '[' {
		j := strings.IndexByte(rest, ']')
		if j < 0 || strings.ContainsAny(rest[1:j], "[&@;?") {
			return p, false
		}
		hostEnd = j + 1
		if hostEnd < len(rest) && strings.IndexByte(":;?", rest[hostEnd]) < 0 {
			return p, false
		}
	} else {
		hostEnd = strings.IndexAny(rest, ":;?")
		if hostEnd < 0 {
			hostEnd = len(rest)
		}
	}
	p.host = rest[:hostEnd]
	if p.host == "" || (p.host[0] != '[' && strings.ContainsAny(p.host, "[]@&")) {
		return p, false
	}
	p.key2 = p.host

	end, portNo := hostEnd, 0
	if end < len(rest) && rest[end] == ':' {
		start := end + 1
		end = start
		for end < len(rest) && rest[end] != ';' && rest[end] != '?' {
			c := rest[end]
			if c < '0' || c > '9' || end-start >= 5 {
				return p, false
			}
			portNo = portNo*10 + int(c-'0')
			end++
		}
		p.hasPort, p.port = true, rest[start:end]
	}
	if end < len(rest) && rest[end] == ';' {
		p.params = paramsOf(rest[end+1:])
	}
	def := 5060
	if p.sips {
		def = 5061
	}
	// Kamailio's phone2tel (on by default) parses a sip: or sips: URI with
	// user=phone as a tel number: the user ends at its first ';' (the rest
	// are the number's parameters) and the default port is 5060 even for
	// sips, since the URI type is no longer SIPS.
	if v, ok := uriParam(p.params, "user"); ok && strings.EqualFold(v, "phone") {
		if i := strings.IndexByte(p.user, ';'); i >= 0 {
			p.user = p.user[:i]
		}
		def = 5060
	}
	if p.hasPort && portNo != def {
		p.key2 = rest[:end]
	}
	return p, true
}

// paramsOf cuts URI parameters at the headers ('?').
func paramsOf(s string) string {
	if q := strings.IndexByte(s, '?'); q >= 0 {
		return s[:q]
	}
	return s
}

// transportTLS reports whether URI params name transport=tls, which makes
// $rp default to 5061 as Kamailio's pv module does.
func transportTLS(params string) bool {
	v, ok := uriParam(params, "transport")
	return ok && strings.EqualFold(v, "tls")
}

// uriParam returns the value of the first URI parameter called name
// (case-insensitive), trimmed.
func uriParam(params, name string) (string, bool) {
	for params != "" {
		var p string
		p, params, _ = strings.Cut(params, ";")
		n, val, _ := strings.Cut(p, "=")
		if strings.EqualFold(strings.Trim(n, sipWhitespace), name) {
			return strings.Trim(val, sipWhitespace), true
		}
	}
	return "", false
}
