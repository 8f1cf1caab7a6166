package dispatch

import (
	"fmt"
	"strconv"
	"strings"
)

// transform is one Kamailio transformation of a template variable, written
// $(name{class.op,params}) (docs/configuration.md#template-variables). Only
// the ones dispatcher configurations use for hash_pvar are known; the others
// are refused when the template is compiled.
type transform struct {
	op   trOp
	n, m int  // s.select: index; s.substr: offset and length
	sep  byte // s.select: separator; sepSpace = any of space, tab, CR, LF
}

type trOp uint8

const (
	trLower    trOp = iota // s.tolower
	trUpper                // s.toupper
	trSelect               // s.select,N,SEP
	trSubstr               // s.substr,OFF,LEN
	trURIUser              // uri.user
	trURIHost              // uri.host
	trNameAddr             // nameaddr.uri
)

// sepSpace is Kamailio's "\s" separator of s.select: any white space.
const sepSpace = 1

var trNames = map[string]trOp{
	"s.tolower": trLower, "s.toupper": trUpper, "s.select": trSelect, "s.substr": trSubstr,
	"uri.user": trURIUser, "uri.host": trURIHost, "nameaddr.uri": trNameAddr,
}

// parseTransform parses the text between '{' and '}'.
func parseTransform(text string) (transform, error) {
	name, params, hasParams := strings.Cut(text, ",")
	name = strings.TrimSpace(name)
	op, ok := trNames[name]
	if !ok {
		return transform{}, fmt.Errorf("transformation {%s} is not supported (supported: s.tolower, s.toupper, s.select, s.substr, uri.user, uri.host, nameaddr.uri)", text)
	}
	tr := transform{op: op}
	switch op {
	case trSelect:
		// The separator is one character and may itself be a ','.
		idx, sep, ok := strings.Cut(params, ",")
		if !ok || sep == "" {
			return tr, fmt.Errorf("transformation {%s}: want {s.select,INDEX,SEPARATOR}", text)
		}
		n, err := trInt(idx)
		if err != nil {
			return tr, fmt.Errorf("transformation {%s}: index: %w", text, err)
		}
		tr.n = n
		switch {
		case len(sep) == 1:
			tr.sep = sep[0]
		case len(sep) == 2 && sep[0] == '\\':
			esc, ok := map[byte]byte{'\\': '\\', 'n': '\n', 'r': '\r', 't': '\t', 's': sepSpace, 'w': ' '}[sep[1]]
			if !ok {
				return tr, fmt.Errorf("transformation {%s}: unknown separator escape %q", text, sep)
			}
			tr.sep = esc
		default:
			return tr, fmt.Errorf("transformation {%s}: the separator must be one character (or \\n, \\r, \\t, \\s, \\w, \\\\), got %q", text, sep)
		}
	case trSubstr:
		off, length, ok := strings.Cut(params, ",")
		if !ok {
			return tr, fmt.Errorf("transformation {%s}: want {s.substr,OFFSET,LENGTH}", text)
		}
		var err1, err2 error
		tr.n, err1 = trInt(off)
		tr.m, err2 = trInt(length)
		if err1 != nil || err2 != nil || tr.m < 0 {
			return tr, fmt.Errorf("transformation {%s}: want an integer offset and a length >= 0", text)
		}
	default:
		if hasParams {
			return tr, fmt.Errorf("transformation {%s}: %s takes no parameters", text, name)
		}
	}
	return tr, nil
}

// trInt parses a numeric parameter. Kamailio also takes a variable there;
// sipdispatch does not.
func trInt(s string) (int, error) {
	s = strings.TrimSpace(s)
	if strings.HasPrefix(s, "$") {
		return 0, fmt.Errorf("%q: variables as parameters are not supported", s)
	}
	return strconv.Atoi(s)
}

// applyTransforms runs trs over dst[start:] in place and reports whether
// every one succeeded (a failed one makes Kamailio print nothing).
func applyTransforms(dst []byte, start int, trs []transform) ([]byte, bool) {
	for _, tr := range trs {
		v := dst[start:]
		var out []byte
		switch tr.op {
		case trLower, trUpper:
			// ASCII only, as Kamailio.
			for i, c := range v {
				if tr.op == trLower && 'A' <= c && c <= 'Z' {
					v[i] = c + 'a' - 'A'
				} else if tr.op == trUpper && 'a' <= c && c <= 'z' {
					v[i] = c - ('a' - 'A')
				}
			}
			continue
		case trSelect:
			out = selectField(v, tr.n, tr.sep)
		case trSubstr:
			var ok bool
			if out, ok = substr(v, tr.n, tr.m); !ok {
				return dst, false
			}
		case trURIUser, trURIHost:
			// Kamailio's uri transformations take a non-empty value and
			// drop one trailing ';' before parsing.
			if len(v) == 0 {
				return dst, false
			}
			s := string(v)
			if len(s) > 4 && s[len(s)-1] == ';' {
				s = s[:len(s)-1]
			}
			u, ok := parseURIParts(s)
			if !ok {
				return dst, false
			}
			part := u.user
			if tr.op == trURIHost {
				part = u.host
			}
			dst = append(dst[:start], part...)
			continue
		case trNameAddr:
			var ok bool
			if out, ok = nameAddrURI(v); !ok {
				return dst, false
			}
		}
		n := copy(dst[start:], out) // out lies inside v: copy moves it left
		dst = dst[:start+n]
	}
	return dst, true
}

// selectField is Kamailio's s.select: the n-th field split at sep (from the
// end for a negative n, -1 = the last); an index past the fields is empty.
func selectField(v []byte, n int, sep byte) []byte {
	isSep := func(c byte) bool {
		if sep == sepSpace {
			return c == ' ' || c == '\t' || c == '\r' || c == '\n'
		}
		return c == sep
	}
	if n >= 0 {
		from := 0
		for i, c := range v {
			if isSep(c) {
				if n == 0 {
					return v[from:i]
				}
				from, n = i+1, n-1
			}
		}
		if n == 0 {
			return v[from:]
		}
		return nil
	}
	n = -n - 1
	end := len(v)
	for i := len(v) - 1; i >= 0; i-- {
		if isSep(v[i]) {
			if n == 0 {
				return v[i+1 : end]
			}
			end, n = i, n-1
		}
	}
	if n == 0 {
		return v[:end]
	}
	return nil
}

// substr is Kamailio's s.substr: length bytes from offset (from the end for a
// negative offset); a length of 0, or one past the end, runs to the end. An
// offset outside the value fails.
func substr(v []byte, off, length int) ([]byte, bool) {
	if off >= 0 {
		if off >= len(v) {
			return nil, false
		}
		if length == 0 || off+length >= len(v) {
			return v[off:], true
		}
		return v[off : off+length], true
	}
	off = -off
	if off > len(v) {
		return nil, false
	}
	if length == 0 || off < length {
		return v[len(v)-off:], true
	}
	return v[len(v)-off : len(v)-off+length], true
}

// nameAddrURI is Kamailio's nameaddr.uri: the URI between the first '<' and
// '>' outside quotes, or the whole value when it has no '<'.
func nameAddrURI(v []byte) ([]byte, bool) {
	lt := indexUnquoted(v, '<')
	if lt < 0 {
		return v, true
	}
	gt := indexUnquoted(v[lt+1:], '>')
	if gt < 0 {
		return nil, false
	}
	return v[lt+1 : lt+1+gt], true
}

// indexUnquoted finds c outside double quotes, as Kamailio's
// find_not_quoted (a quote preceded by a backslash does not close).
func indexUnquoted(v []byte, c byte) int {
	quoted := false
	for i, b := range v {
		switch {
		case !quoted && b == '"':
			quoted = true
		case !quoted && b == c:
			return i
		case quoted && b == '"' && v[i-1] != '\\':
			quoted = false
		}
	}
	return -1
}
