package dispatch

import (
	"fmt"
	"strconv"
	"strings"
)

// Template is a compiled text with the template variables of
// docs/configuration.md ($ci, $fU, $hdr(Name), $ds.set, ...), used for
// hash_pvar (algorithm 7) and route headers. A variable is written $name or
// $(name); a name runs over letters, digits and '_' ("$ds." names add a dot).
// Everything else is literal text. A Template is immutable and safe for
// concurrent use.
type Template struct {
	segs []tmplSeg
}

// DSVars are the $ds.* template variables of a selection; nil when the
// template is expanded before a destination is chosen.
type DSVars struct {
	Set   int    // $ds.set: the set id
	URI   string // $ds.uri: the chosen destination's URI
	DUID  string // $ds.duid: its duid attribute
	Attrs string // $ds.attrs: its attribute text
	Count int    // $ds.count: how many destinations the selection holds
}

// tmplVar names what a template segment expands to.
type tmplVar uint8

const (
	varLiteral    tmplVar = iota
	varCallID             // $ci
	varFromURI            // $fu
	varFromUser           // $fU
	varFromDomain         // $fd
	varToURI              // $tu
	varToUser             // $tU
	varToDomain           // $td
	varRURI               // $ru
	varRUser              // $rU
	varRDomain            // $rd
	varRPort              // $rp
	varSrcIP              // $si
	varSrcPort            // $sp
	varAuthUser           // $au
	varUserAgent          // $ua
	varMethod             // $rm
	varHeader             // $hdr(Name)
	varDSSet              // $ds.set
	varDSURI              // $ds.uri
	varDSDUID             // $ds.duid
	varDSAttrs            // $ds.attrs
	varDSCount            // $ds.count
)

var tmplVars = map[string]tmplVar{
	"ci": varCallID, "fu": varFromURI, "fU": varFromUser, "fd": varFromDomain,
	"tu": varToURI, "tU": varToUser, "td": varToDomain,
	"ru": varRURI, "rU": varRUser, "rd": varRDomain, "rp": varRPort,
	"si": varSrcIP, "sp": varSrcPort, "au": varAuthUser, "ua": varUserAgent, "rm": varMethod,
	"ds.set": varDSSet, "ds.uri": varDSURI, "ds.duid": varDSDUID,
	"ds.attrs": varDSAttrs, "ds.count": varDSCount,
}

// tmplSeg is literal text (varLiteral) or one variable; text holds the
// literal or the $hdr header name.
type tmplSeg struct {
	v    tmplVar
	text string
}

// nullValue is what Kamailio's pv_printf writes for a variable with no value
// (no user in the From URI, no such header, no $ds before a selection).
// Printing the same keeps hash_pvar results equal to Kamailio's.
const nullValue = "<null>"

// ParseTemplate compiles s. An unknown or malformed variable is an error
// naming it and its byte offset in s.
func ParseTemplate(s string) (*Template, error) {
	t := &Template{}
	lit := 0 // start of the pending literal
	for i := 0; i < len(s); {
		if s[i] != '$' {
			i++
			continue
		}
		if lit < i {
			t.segs = append(t.segs, tmplSeg{v: varLiteral, text: s[lit:i]})
		}
		seg, n, err := parseVar(s[i:])
		if err != nil {
			return nil, fmt.Errorf("template %q: offset %d: %w", s, i, err)
		}
		t.segs = append(t.segs, seg)
		i += n
		lit = i
	}
	if lit < len(s) {
		t.segs = append(t.segs, tmplSeg{v: varLiteral, text: s[lit:]})
	}
	return t, nil
}

// parseVar parses the variable at the start of s (s[0] == '$') and returns
// it with the number of bytes it spans.
func parseVar(s string) (tmplSeg, int, error) {
	if len(s) > 1 && s[1] == '(' {
		// $(name): the name runs to the matching parenthesis.
		depth := 0
		for j := 1; j < len(s); j++ {
			switch s[j] {
			case '(':
				depth++
			case ')':
				depth--
				if depth == 0 {
					seg, err := lookupVar(s[2:j])
					return seg, j + 1, err
				}
			}
		}
		return tmplSeg{}, 0, fmt.Errorf("unterminated variable %q", s)
	}
	j := 1
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	name := s[1:j]
	if name == "ds" && j < len(s) && s[j] == '.' {
		j++
		for j < len(s) && isNameByte(s[j]) {
			j++
		}
		name = s[1:j]
	}
	if name == "hdr" && j < len(s) && s[j] == '(' {
		k := strings.IndexByte(s[j:], ')')
		if k < 0 {
			return tmplSeg{}, 0, fmt.Errorf("unterminated variable %q", s)
		}
		j += k + 1
		name = s[1:j]
	}
	seg, err := lookupVar(name)
	return seg, j, err
}

// lookupVar resolves a variable name without its '$'.
func lookupVar(name string) (tmplSeg, error) {
	if v, ok := tmplVars[name]; ok {
		return tmplSeg{v: v}, nil
	}
	if h, ok := strings.CutPrefix(name, "hdr("); ok && strings.HasSuffix(h, ")") {
		h = strings.Trim(h[:len(h)-1], sipWhitespace)
		if h == "" || strings.ContainsAny(h, "():$ \t") {
			return tmplSeg{}, fmt.Errorf("bad header name in variable %q", "$"+name)
		}
		return tmplSeg{v: varHeader, text: h}, nil
	}
	if name == "" {
		return tmplSeg{}, fmt.Errorf("'$' without a variable name")
	}
	return tmplSeg{}, fmt.Errorf("unknown variable %q", "$"+name)
}

func isNameByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// Append appends the expansion of t for req (and ds, which may be nil) to
// dst and returns the extended buffer. Variables without a value print as
// "<null>", as in Kamailio. It allocates only when dst must grow.
func (t *Template) Append(dst []byte, req *Request, ds *DSVars) []byte {
	for _, seg := range t.segs {
		switch seg.v {
		case varLiteral:
			dst = append(dst, seg.text...)
		case varCallID:
			dst = appendOrNull(dst, CallIDKey(req.CallID))
		case varFromURI:
			dst = appendOrNull(dst, strings.Trim(req.From, sipWhitespace))
		case varToURI:
			dst = appendOrNull(dst, strings.Trim(req.To, sipWhitespace))
		case varRURI:
			dst = appendOrNull(dst, req.RURI)
		case varFromUser, varToUser, varRUser:
			u, _ := parseURIParts(uriOf(req, seg.v))
			dst = appendOrNull(dst, u.user)
		case varFromDomain, varToDomain, varRDomain:
			u, _ := parseURIParts(uriOf(req, seg.v))
			dst = appendOrNull(dst, u.host)
		case varRPort:
			dst = appendRPort(dst, req.RURI)
		case varSrcIP:
			dst = appendOrNull(dst, req.SrcIP)
		case varSrcPort:
			if req.SrcPort == 0 {
				dst = append(dst, nullValue...)
			} else {
				dst = strconv.AppendInt(dst, int64(req.SrcPort), 10)
			}
		case varAuthUser:
			u, _ := AuthUserKey(req.AuthUser)
			dst = appendOrNull(dst, u)
		case varUserAgent:
			dst = appendOrNull(dst, req.UserAgent)
		case varMethod:
			dst = appendOrNull(dst, req.Method)
		case varHeader:
			if v, ok := req.Header(seg.text); ok {
				dst = append(dst, v...)
			} else {
				dst = append(dst, nullValue...)
			}
		default:
			dst = appendDS(dst, seg.v, ds)
		}
	}
	return dst
}

// uriOf returns the request URI a user/domain variable reads.
func uriOf(req *Request, v tmplVar) string {
	switch v {
	case varFromUser, varFromDomain:
		return req.From
	case varToUser, varToDomain:
		return req.To
	}
	return req.RURI
}

// appendRPort writes the R-URI port; without one Kamailio prints 5061 for
// transport=tls and 5060 otherwise (even for sips:, as its pv module does).
func appendRPort(dst []byte, ruri string) []byte {
	u, ok := parseURIParts(ruri)
	switch {
	case !ok:
		return append(dst, nullValue...)
	case u.port != "":
		return append(dst, u.port...)
	case transportTLS(u.params):
		return append(dst, "5061"...)
	}
	return append(dst, "5060"...)
}

// appendDS writes a $ds.* variable.
func appendDS(dst []byte, v tmplVar, ds *DSVars) []byte {
	if ds == nil {
		return append(dst, nullValue...)
	}
	switch v {
	case varDSSet:
		return strconv.AppendInt(dst, int64(ds.Set), 10)
	case varDSURI:
		return appendOrNull(dst, ds.URI)
	case varDSDUID:
		return appendOrNull(dst, ds.DUID)
	case varDSAttrs:
		return appendOrNull(dst, ds.Attrs)
	}
	return strconv.AppendInt(dst, int64(ds.Count), 10)
}

func appendOrNull(dst []byte, s string) []byte {
	if s == "" {
		return append(dst, nullValue...)
	}
	return append(dst, s...)
}
