package dispatch

// Request holds the fields of a SIP request that selection and templates read.
// The proxy fills it from a parsed message; tests and benchmarks build it by
// hand. URIs are raw URI text (no display name, no header parameters); key
// extraction parses them without allocating.
type Request struct {
	Method    string  // request method, upper case
	CallID    string  // Call-ID value, untrimmed
	RURI      string  // Request-URI (after any rewrite)
	From      string  // From URI
	To        string  // To URI
	AuthUser  string  // digest username of Proxy-Authorization, else Authorization; "" if none
	UserAgent string  // User-Agent value
	SrcIP     string  // source address of the request
	SrcPort   int     // source port
	Proto     string  // transport it arrived on: udp, tcp, tls
	Headers   Headers // nil: none
}

// Headers gives a request's header fields by name, for $hdr(Name) and
// header matches. The proxy's reads the parsed message only when a route or
// template asks (sip.RequestFrom), so that a request no route inspects does
// not pay for a copy of every header value; HeaderList is a plain list.
type Headers interface {
	// Header returns the value of the first field named name
	// (case-insensitive, compact forms are the caller's business) and
	// whether there is one.
	Header(name string) (string, bool)
}

// Header is one header field of a Request, for $hdr(Name) in templates.
type Header struct{ Name, Value string }

// HeaderList is Headers as a list of fields in message order.
type HeaderList []Header

// Header implements Headers.
func (l HeaderList) Header(name string) (string, bool) {
	for i := range l {
		if HeaderNameEqual(l[i].Name, name) {
			return l[i].Value, true
		}
	}
	return "", false
}

// Header returns the value of the first header named name (see Headers)
// and whether it was present.
func (r *Request) Header(name string) (string, bool) {
	if r.Headers == nil {
		return "", false
	}
	return r.Headers.Header(name)
}

// HeaderNameEqual compares header names as Headers does: strings.EqualFold for ASCII, without the
// Unicode tables on the hot path.
func HeaderNameEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}
