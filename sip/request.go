package sip

import (
	"net"
	"strconv"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/sipenc"
)

// RequestFrom extracts what selection, routes and templates read from a
// parsed request. src is the packet source "ip:port" and proto the transport
// it arrived on. It never fails: a missing header gives an empty field.
// Header values for $hdr and header matches are read from req when asked
// (msgHeaders): req's headers are never changed after parsing, the
// forwarded copy has its own list (forwardCopy).
func RequestFrom(req *sipmsg.Request, src, proto string) dispatch.Request {
	r := dispatch.Request{
		Method:  string(req.Method),
		Proto:   lowerProto(proto),
		Headers: (*msgHeaders)(req),
	}
	// The three URIs written into one string: one allocation instead of
	// sipgo's String for each (a builder, the port, the parameters).
	var buf [256]byte
	b := sipenc.AppendURI(buf[:0], &req.Recipient)
	ruri := len(b)
	if h := req.From(); h != nil {
		b = sipenc.AppendURI(b, &h.Address)
	}
	from := len(b)
	if h := req.To(); h != nil {
		b = sipenc.AppendURI(b, &h.Address)
	}
	uris := string(b)
	r.RURI, r.From, r.To = uris[:ruri], uris[ruri:from], uris[from:]
	if h := req.CallID(); h != nil {
		r.CallID = h.Value()
	}
	if host, port, err := net.SplitHostPort(src); err == nil {
		r.SrcIP = host
		r.SrcPort, _ = strconv.Atoi(port)
	}
	// One pass over the headers, without sipgo's GetHeader, which lower-cases
	// every header name it compares (an allocation each).
	var proxyAuth, auth string
	var hasUA, hasProxyAuth, hasAuth bool
	for _, h := range req.Headers() {
		switch name := h.Name(); {
		case !hasUA && strings.EqualFold(name, "User-Agent"):
			r.UserAgent, hasUA = h.Value(), true
		case !hasProxyAuth && strings.EqualFold(name, "Proxy-Authorization"):
			proxyAuth, hasProxyAuth = h.Value(), true
		case !hasAuth && strings.EqualFold(name, "Authorization"):
			auth, hasAuth = h.Value(), true
		}
	}
	// Kamailio's $au prefers the proxy credentials (docs/configuration.md,
	// "Template variables").
	for _, v := range [...]string{proxyAuth, auth} {
		if u, ok := digestUsername(v); ok {
			r.AuthUser = u
			break
		}
	}
	return r
}

// msgHeaders is a parsed request as dispatch.Headers.
type msgHeaders sipmsg.Request

// Header implements dispatch.Headers.
func (m *msgHeaders) Header(name string) (string, bool) {
	for _, h := range (*sipmsg.Request)(m).Headers() {
		if dispatch.HeaderNameEqual(h.Name(), name) {
			return h.Value(), true
		}
	}
	return "", false
}

// lowerProto is strings.ToLower for the transport names sipgo gives,
// without an allocation for each request.
func lowerProto(p string) string {
	switch p {
	case "UDP", "udp":
		return "udp"
	case "TCP", "tcp":
		return "tcp"
	case "TLS", "tls":
		return "tls"
	}
	return strings.ToLower(p)
}

// digestUsername returns the username parameter of a Digest credentials value
// (RFC 3261 §25.1 credentials: `Digest username="alice", realm=...`).
func digestUsername(v string) (string, bool) {
	scheme, params, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return "", false
	}
	for params != "" {
		var p string
		p, params = cutParam(params)
		name, val, ok := strings.Cut(p, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "username") {
			continue
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
			val = strings.ReplaceAll(val[1:len(val)-1], `\"`, `"`)
		}
		return val, val != ""
	}
	return "", false
}

// cutParam splits off the first comma-separated parameter, keeping commas
// inside quoted strings.
func cutParam(s string) (param, rest string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if quoted {
				i++
			}
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				return strings.TrimSpace(s[:i]), s[i+1:]
			}
		}
	}
	return strings.TrimSpace(s), ""
}
