// Package sipenc writes sipgo messages to bytes exactly as sipgo's
// StringWrite does, byte for byte, without its allocations: sipgo formats
// every port, status code and number with strconv.Itoa, every URI parameter
// list and Request-URI through a strings.Builder of its own, and each of
// those is an allocation per message sent (docs/benchmarks.md, "Fewer
// allocations per call"). The output is sipgo's own format so that what goes
// on the wire does not change; sipenc_test checks that against sipgo over the
// RFC 4475 torture messages and the proxy's own.
package sipenc

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"

	sipmsg "github.com/emiago/sipgo/sip"
)

// bufs holds the buffers of WithBytes; most SIP messages fit in 2 KB.
var bufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// WithBytes serialises m into a pooled buffer and calls f with it; f must
// not keep the bytes (the buffer goes back to the pool when f returns).
func WithBytes(m sipmsg.Message, f func(b []byte) error) error {
	bp := bufs.Get().(*[]byte)
	*bp = Append((*bp)[:0], m)
	err := f(*bp)
	bufs.Put(bp)
	return err
}

// Append appends m as m.StringWrite writes it.
func Append(dst []byte, m sipmsg.Message) []byte {
	var hs []sipmsg.Header
	switch m := m.(type) {
	case *sipmsg.Request:
		if m.CompactHeaders {
			return appendSlow(dst, m)
		}
		dst = append(dst, m.Method...)
		dst = append(dst, ' ')
		dst = AppendURI(dst, &m.Recipient)
		dst = append(dst, ' ')
		dst = append(dst, m.SipVersion...)
		hs = m.Headers()
	case *sipmsg.Response:
		if m.CompactHeaders {
			return appendSlow(dst, m)
		}
		dst = append(dst, m.SipVersion...)
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, int64(m.StatusCode), 10)
		dst = append(dst, ' ')
		dst = append(dst, m.Reason...)
		hs = m.Headers()
	default:
		return appendSlow(dst, m)
	}
	dst = append(dst, "\r\n"...)
	for i, h := range hs {
		if i > 0 {
			dst = append(dst, "\r\n"...)
		}
		dst = AppendHeader(dst, h)
	}
	dst = append(dst, "\r\n\r\n"...)
	if b := m.Body(); b != nil {
		dst = append(dst, b...)
	}
	return dst
}

// appendSlow is sipgo's own serialisation, for what Append does not
// write itself (compact header names).
func appendSlow(dst []byte, m sipmsg.Message) []byte {
	w := byteWriter{dst}
	m.StringWrite(&w)
	return w.b
}

type byteWriter struct{ b []byte }

func (w *byteWriter) WriteString(s string) (int, error) {
	w.b = append(w.b, s...)
	return len(s), nil
}

// AppendHeader appends h as h.StringWrite writes it: "Name: value".
func AppendHeader(dst []byte, h sipmsg.Header) []byte {
	dst = append(dst, h.Name()...)
	dst = append(dst, ": "...)
	return AppendValue(dst, h)
}

// AppendValue appends h's value as h.Value returns it (sipgo's
// valueStringWrite).
func AppendValue(dst []byte, h sipmsg.Header) []byte {
	switch h := h.(type) {
	case *sipmsg.ViaHeader:
		dst = append(dst, h.ProtocolName...)
		dst = append(dst, '/')
		dst = append(dst, h.ProtocolVersion...)
		dst = append(dst, '/')
		dst = append(dst, h.Transport...)
		dst = append(dst, ' ')
		dst = appendHostPort(dst, h.Host, h.Port)
		return appendHeaderParams(dst, h.Params)
	case *sipmsg.FromHeader:
		return appendNameAddr(dst, h.DisplayName, &h.Address, h.Params)
	case *sipmsg.ToHeader:
		return appendNameAddr(dst, h.DisplayName, &h.Address, h.Params)
	case *sipmsg.ContactHeader:
		if h.Address.Wildcard {
			return append(dst, '*')
		}
		return appendNameAddr(dst, h.DisplayName, &h.Address, h.Params)
	case *sipmsg.RouteHeader:
		return appendNameAddr(dst, "", &h.Address, nil)
	case *sipmsg.RecordRouteHeader:
		return appendNameAddr(dst, "", &h.Address, nil)
	case *sipmsg.CallIDHeader:
		return append(dst, *h...)
	case *sipmsg.CSeqHeader:
		dst = strconv.AppendInt(dst, int64(int(h.SeqNo)), 10)
		dst = append(dst, ' ')
		return append(dst, h.MethodName...)
	case *sipmsg.MaxForwardsHeader:
		return strconv.AppendInt(dst, int64(int(*h)), 10)
	case *sipmsg.ContentLengthHeader:
		return strconv.AppendInt(dst, int64(int(*h)), 10)
	case *sipmsg.ContentTypeHeader:
		return append(dst, *h...)
	}
	// Every other header's Value is its valueStringWrite (generic headers:
	// the text as received).
	return append(dst, h.Value()...)
}

// appendNameAddr is From, To and Contact's form; Route and Record-Route
// have neither display name nor parameters.
func appendNameAddr(dst []byte, display string, u *sipmsg.Uri, params sipmsg.HeaderParams) []byte {
	if display != "" {
		dst = append(dst, '"')
		dst = append(dst, display...)
		dst = append(dst, `" `...)
	}
	dst = append(dst, '<')
	dst = AppendURI(dst, u)
	dst = append(dst, '>')
	return appendHeaderParams(dst, params)
}

func appendHeaderParams(dst []byte, p sipmsg.HeaderParams) []byte {
	if len(p) == 0 {
		return dst
	}
	dst = append(dst, ';')
	return appendParams(dst, p, ';')
}

// appendParams is HeaderParams.ToString and ToStringWrite, which write
// the same: a value with a space or tab goes in quotes, an empty one
// without '='.
func appendParams(dst []byte, p sipmsg.HeaderParams, sep byte) []byte {
	for i, kv := range p {
		if i > 0 {
			dst = append(dst, sep)
		}
		dst = append(dst, kv.K...)
		switch {
		case kv.V == "":
		case strings.ContainsAny(kv.V, " \t"):
			dst = append(dst, `="`...)
			dst = append(dst, kv.V...)
			dst = append(dst, '"')
		default:
			dst = append(dst, '=')
			dst = append(dst, kv.V...)
		}
	}
	return dst
}

// AppendURI appends u as u.StringWrite writes it.
func AppendURI(dst []byte, u *sipmsg.Uri) []byte {
	if u.Scheme == "" {
		dst = append(dst, "sip"...)
	} else {
		dst = append(dst, u.Scheme...)
	}
	dst = append(dst, ':')
	if raw := u.Raw(); raw != "" {
		return append(dst, raw...)
	}
	if u.HierarhicalSlashes {
		dst = append(dst, "//"...)
	}
	if u.User != "" {
		dst = append(dst, u.User...)
		if u.Password != "" {
			dst = append(dst, ':')
			dst = append(dst, u.Password...)
		}
		dst = append(dst, '@')
	}
	dst = appendHostPort(dst, u.Host, u.Port)
	if len(u.UriParams) > 0 {
		dst = append(dst, ';')
		dst = appendParams(dst, u.UriParams, ';')
	}
	if len(u.Headers) > 0 {
		dst = append(dst, '?')
		dst = appendParams(dst, u.Headers, '&')
	}
	return dst
}

// appendHostPort writes host as appendHost does and ":port" when port is
// set, as sipgo writes a Via's sent-by and a URI's host part.
func appendHostPort(dst []byte, host string, port int) []byte {
	dst = appendHost(dst, host)
	if port > 0 {
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, int64(port), 10)
	}
	return dst
}

// appendHost is sipgo's uriIP: an IPv6 address without brackets gets
// them (net.ParseIP's IPv6 without zone, not IPv4-mapped).
func appendHost(dst []byte, host string) []byte {
	if strings.IndexByte(host, ':') >= 0 {
		if a, err := netip.ParseAddr(host); err == nil && a.Zone() == "" && !a.Is4In6() && a.Is6() {
			dst = append(dst, '[')
			dst = append(dst, host...)
			return append(dst, ']')
		}
	}
	return append(dst, host...)
}
