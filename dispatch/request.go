package dispatch

// Request holds the fields of a SIP request that selection and templates read.
// The proxy fills it from a parsed message; tests and benchmarks build it by
// hand. URIs are raw URI text (no display name, no header parameters); key
// extraction parses them without allocating.
type Request struct {
	Method    string // request method, upper case
	CallID    string // Call-ID value, untrimmed
	RURI      string // Request-URI (after any rewrite)
	From      string // From URI
	To        string // To URI
	AuthUser  string // digest username of Proxy-Authorization, else Authorization; "" if none
	UserAgent string // User-Agent value
	SrcIP     string // source address of the request
	SrcPort   int    // source port
	Proto     string // transport it arrived on: udp, tcp, tls
	Headers   []Header
}

// Header is one header field of a Request, for $hdr(Name) in templates.
type Header struct{ Name, Value string }

// Header returns the value of the first header named name (case-insensitive,
// compact forms are the caller's business), and whether it was present.
func (r *Request) Header(name string) (string, bool) {
	for i := range r.Headers {
		if equalFoldASCII(r.Headers[i].Name, name) {
			return r.Headers[i].Value, true
		}
	}
	return "", false
}

// equalFoldASCII is strings.EqualFold for ASCII header names, without the
// Unicode tables on the hot path.
func equalFoldASCII(a, b string) bool {
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
