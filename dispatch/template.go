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
// The $(name{tr}...) form applies Kamailio transformations (see
// transform.go); $avp(...) and $var(...) read the templates the operator
// declared for them (ParseTemplateVars). Everything else is literal text. A
// Template is immutable and safe for concurrent use.
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
	varDeclared           // $avp(...) / $var(...): the template declared for it
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
// literal or the $hdr header name. A variable may carry transformations,
// applied in order; a declared variable holds its template in decl.
type tmplSeg struct {
	v    tmplVar
	text string
	trs  []transform
	decl *Template
}

// nullValue is what Kamailio's pv_printf writes for a variable with no value
// (no user in the From URI, no such header, no $ds before a selection).
// Printing the same keeps hash_pvar results equal to Kamailio's.
const nullValue = "<null>"

// ParseTemplate compiles s. An unknown or malformed variable is an error
// naming it and its byte offset in s.
func ParseTemplate(s string) (*Template, error) { return ParseTemplateVars(s, nil) }

// ParseTemplateVars is ParseTemplate where the $avp(...) and $var(...)
// variables named in vars (keys as written, e.g. "$avp(i:273)") read the
// template of their value. Those templates may not use $avp or $var
// themselves. A variable of that kind not in vars is an error.
func ParseTemplateVars(s string, vars map[string]string) (*Template, error) {
	p := tmplParser{vars: make(map[string]string, len(vars))}
	for k, v := range vars {
		p.vars[DeclaredVarName(k)] = v
	}
	return p.parse(s)
}

// tmplParser carries the declared variables while a template is compiled.
type tmplParser struct {
	vars   map[string]string
	inDecl bool // compiling a declared variable's value: no $avp/$var
}

func (p *tmplParser) parse(s string) (*Template, error) {
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
		seg, n, err := p.parseVar(s[i:])
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
func (p *tmplParser) parseVar(s string) (tmplSeg, int, error) {
	if len(s) > 1 && s[1] == '(' {
		return p.parseParenVar(s)
	}
	name, j, err := scanName(s, 1)
	if err != nil {
		return tmplSeg{}, 0, err
	}
	seg, err := p.lookupVar(name)
	return seg, j, err
}

// scanName reads a variable name starting at s[i]: letters, digits and '_',
// a "ds." prefix, and the (...) argument of hdr, avp and var. It returns the
// name and where it ends.
func scanName(s string, i int) (string, int, error) {
	j := i
	for j < len(s) && isNameByte(s[j]) {
		j++
	}
	name := s[i:j]
	if name == "ds" && j < len(s) && s[j] == '.' {
		j++
		for j < len(s) && isNameByte(s[j]) {
			j++
		}
		name = s[i:j]
	}
	if (name == "hdr" || name == "avp" || name == "var") && j < len(s) && s[j] == '(' {
		k := strings.IndexByte(s[j:], ')')
		if k < 0 {
			return "", 0, fmt.Errorf("unterminated variable %q", s)
		}
		j += k + 1
		name = s[i:j]
	}
	return name, j, nil
}

// parseParenVar parses $(name), $(name{tr}...) and rejects the parts of
// Kamailio's syntax sipdispatch does not evaluate (indexes, parameters that
// are variables).
func (p *tmplParser) parseParenVar(s string) (tmplSeg, int, error) {
	name, j, err := scanName(s, 2)
	if err != nil {
		return tmplSeg{}, 0, err
	}
	seg, err := p.lookupVar(name)
	if err != nil {
		return tmplSeg{}, 0, err
	}
	for j < len(s) && s[j] == '{' {
		k := strings.IndexByte(s[j:], '}')
		if k < 0 {
			return tmplSeg{}, 0, fmt.Errorf("unterminated transformation in %q", s)
		}
		tr, err := parseTransform(s[j+1 : j+k])
		if err != nil {
			return tmplSeg{}, 0, err
		}
		seg.trs = append(seg.trs, tr)
		j += k + 1
	}
	switch {
	case j >= len(s):
		return tmplSeg{}, 0, fmt.Errorf("unterminated variable %q", s)
	case s[j] == '[':
		return tmplSeg{}, 0, fmt.Errorf("variable %q: indexes [N] are not supported", "$"+name)
	case s[j] != ')':
		return tmplSeg{}, 0, fmt.Errorf("variable %q: unexpected %q (want a transformation {...} or ')')", "$"+name, s[j])
	}
	return seg, j + 1, nil
}

// lookupVar resolves a variable name without its '$'.
func (p *tmplParser) lookupVar(name string) (tmplSeg, error) {
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
	if strings.HasPrefix(name, "avp(") || strings.HasPrefix(name, "var(") {
		return p.declared("$" + name)
	}
	if name == "" {
		return tmplSeg{}, fmt.Errorf("'$' without a variable name")
	}
	return tmplSeg{}, fmt.Errorf("unknown variable %q", "$"+name)
}

// declared compiles the value declared for an $avp/$var variable.
func (p *tmplParser) declared(name string) (tmplSeg, error) {
	if p.inDecl {
		return tmplSeg{}, fmt.Errorf("%s: a declared value may not use $avp or $var", name)
	}
	v, ok := p.vars[DeclaredVarName(name)]
	if !ok {
		return tmplSeg{}, fmt.Errorf("%s has no value here: declare it in dispatcher.hash_pvar_vars (only hash_pvar reads $avp and $var)", name)
	}
	sub := tmplParser{vars: p.vars, inDecl: true}
	t, err := sub.parse(v)
	if err != nil {
		return tmplSeg{}, fmt.Errorf("%s: %w", name, err)
	}
	return tmplSeg{v: varDeclared, text: name, decl: t}, nil
}

// DeclaredVarName normalises a $avp(...)/$var(...) name as a key of
// hash_pvar_vars: spaces inside the parentheses do not count.
func DeclaredVarName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, name)
}

func isNameByte(c byte) bool {
	return c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

// Append appends the expansion of t for req (and ds, which may be nil) to
// dst and returns the extended buffer. Variables without a value print as
// "<null>", as in Kamailio; a variable whose transformation fails (or that
// has no value to transform) prints nothing, as Kamailio's pv_printf. It
// allocates only when dst must grow.
func (t *Template) Append(dst []byte, req *Request, ds *DSVars) []byte {
	for i := range t.segs {
		seg := &t.segs[i]
		if seg.v == varLiteral {
			dst = append(dst, seg.text...)
			continue
		}
		start := len(dst)
		var null bool
		dst, null = seg.appendValue(dst, req, ds)
		switch {
		case len(seg.trs) > 0 && null:
			dst = dst[:start]
		case len(seg.trs) > 0:
			var ok bool
			if dst, ok = applyTransforms(dst, start, seg.trs); !ok {
				dst = dst[:start]
			}
		case null:
			dst = append(dst, nullValue...)
		}
	}
	return dst
}

// appendValue appends the variable's value and reports whether it has none
// (then nothing is appended).
func (seg *tmplSeg) appendValue(dst []byte, req *Request, ds *DSVars) ([]byte, bool) {
	switch seg.v {
	case varCallID:
		return appendValue(dst, CallIDKey(req.CallID))
	case varFromURI:
		return appendValue(dst, strings.Trim(req.From, sipWhitespace))
	case varToURI:
		return appendValue(dst, strings.Trim(req.To, sipWhitespace))
	case varRURI:
		return appendValue(dst, req.RURI)
	case varFromUser, varToUser, varRUser:
		u, _ := parseURIParts(uriOf(req, seg.v))
		return appendValue(dst, u.user)
	case varFromDomain, varToDomain, varRDomain:
		u, _ := parseURIParts(uriOf(req, seg.v))
		return appendValue(dst, u.host)
	case varRPort:
		return appendRPort(dst, req.RURI)
	case varSrcIP:
		return appendValue(dst, req.SrcIP)
	case varSrcPort:
		if req.SrcPort == 0 {
			return dst, true
		}
		return strconv.AppendInt(dst, int64(req.SrcPort), 10), false
	case varAuthUser:
		u, _ := AuthUserKey(req.AuthUser)
		return appendValue(dst, u)
	case varUserAgent:
		return appendValue(dst, req.UserAgent)
	case varMethod:
		return appendValue(dst, req.Method)
	case varHeader:
		v, ok := req.Header(seg.text)
		return append(dst, v...), !ok
	case varDeclared:
		// A value that is one variable keeps that variable's "no value";
		// anything else is text.
		if d := seg.decl.segs; len(d) == 1 && d[0].v != varLiteral && len(d[0].trs) == 0 {
			return d[0].appendValue(dst, req, ds)
		}
		return seg.decl.Append(dst, req, ds), false
	}
	return appendDS(dst, seg.v, ds)
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
func appendRPort(dst []byte, ruri string) ([]byte, bool) {
	u, ok := parseURIParts(ruri)
	switch {
	case !ok:
		return dst, true
	case u.port != "":
		return append(dst, u.port...), false
	case transportTLS(u.params):
		return append(dst, "5061"...), false
	}
	return append(dst, "5060"...), false
}

// appendDS writes a $ds.* variable.
func appendDS(dst []byte, v tmplVar, ds *DSVars) ([]byte, bool) {
	if ds == nil {
		return dst, true
	}
	switch v {
	case varDSSet:
		return strconv.AppendInt(dst, int64(ds.Set), 10), false
	case varDSURI:
		return appendValue(dst, ds.URI)
	case varDSDUID:
		return appendValue(dst, ds.DUID)
	case varDSAttrs:
		return appendValue(dst, ds.Attrs)
	}
	return strconv.AppendInt(dst, int64(ds.Count), 10), false
}

// appendValue appends s; an empty s is a variable without a value.
func appendValue(dst []byte, s string) ([]byte, bool) {
	return append(dst, s...), s == ""
}
