package sip

import (
	"net"
	"strconv"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// RequestFrom extracts what selection, routes and templates read from a
// parsed request. src is the packet source "ip:port" and proto the transport
// it arrived on. It never fails: a missing header gives an empty field.
func RequestFrom(req *sipmsg.Request, src, proto string) dispatch.Request {
	r := dispatch.Request{
		Method: string(req.Method),
		RURI:   req.Recipient.String(),
		Proto:  strings.ToLower(proto),
	}
	if h := req.CallID(); h != nil {
		r.CallID = h.Value()
	}
	if h := req.From(); h != nil {
		r.From = h.Address.String()
	}
	if h := req.To(); h != nil {
		r.To = h.Address.String()
	}
	if host, port, err := net.SplitHostPort(src); err == nil {
		r.SrcIP = host
		r.SrcPort, _ = strconv.Atoi(port)
	}
	// One pass over the headers, without sipgo's GetHeader, which lower-cases
	// every header name it compares (an allocation each).
	hs := req.Headers()
	r.Headers = make([]dispatch.Header, 0, len(hs))
	var proxyAuth, auth string
	var hasUA, hasProxyAuth, hasAuth bool
	for _, h := range hs {
		name, value := h.Name(), h.Value()
		r.Headers = append(r.Headers, dispatch.Header{Name: name, Value: value})
		switch {
		case !hasUA && strings.EqualFold(name, "User-Agent"):
			r.UserAgent, hasUA = value, true
		case !hasProxyAuth && strings.EqualFold(name, "Proxy-Authorization"):
			proxyAuth, hasProxyAuth = value, true
		case !hasAuth && strings.EqualFold(name, "Authorization"):
			auth, hasAuth = value, true
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
