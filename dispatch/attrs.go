package dispatch

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseAttrs parses a destination's attribute string, `name=value;name=value`,
// with the syntax of Kamailio's parse_params (which ds_set_attrs uses): a value
// may be a token or a quoted string ("..." or '...', quotes removed), a name
// may stand without a value, whitespace around names, '=' and ';' is allowed,
// and one trailing ';' is dropped. Names are case-insensitive. For a name
// given twice the first value counts, as in Kamailio; Pairs keeps both.
//
// Known names fill the typed fields. Where Kamailio only logs a bad value and
// loads the destination anyway (weight=150 becomes 0, maxload=12x becomes 12)
// or silently drops the rest of the string (at a ','), sipdispatch reports an
// error, so that check and ds_load_mode 1 catch the mistake; an explicit
// weight=0 or rweight=0 (no share) stays valid.
func ParseAttrs(s string) (Attrs, error) {
	raw := strings.TrimSuffix(s, ";")
	a := Attrs{Raw: raw}
	pairs, err := parseParams(raw)
	if err != nil {
		return Attrs{}, fmt.Errorf("bad attrs %q: %w", s, err)
	}
	a.Pairs = pairs
	seen := make(map[string]bool, len(pairs))
	for _, p := range pairs {
		name := strings.ToLower(p.Name)
		if err := a.setKnown(name, p.Value, seen[name]); err != nil {
			return Attrs{}, fmt.Errorf("bad attrs %q: %w", s, err)
		}
		seen[name] = true
	}
	return a, nil
}

// setKnown validates a known attribute and, unless an earlier pair of the same
// name was already taken (dup), stores it.
func (a *Attrs) setKnown(name, v string, dup bool) error {
	var num *int
	lo, hi := 0, 1<<31-1
	switch name {
	case "duid":
		if !dup {
			a.DUID = v
		}
		return nil
	case "socket":
		if err := checkSocket(v); err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		if !dup {
			a.Socket = v
		}
		return nil
	case "ping_socket":
		if err := checkSocket(v); err != nil {
			return fmt.Errorf("ping_socket: %w", err)
		}
		if !dup {
			a.PingSocket = v
		}
		return nil
	case "sockname":
		if v == "" {
			return fmt.Errorf("sockname: empty")
		}
		if !dup {
			a.Sockname = v
		}
		return nil
	case "ping_from", "obproxy":
		if !hasSIPScheme(v) {
			return fmt.Errorf("%s %q: must be a sip: or sips: URI", name, v)
		}
		if !dup {
			if name == "ping_from" {
				a.PingFrom = v
			} else {
				a.OBProxy = v
			}
		}
		return nil
	case "weight":
		num, hi = &a.Weight, 100
	case "rweight":
		num, hi = &a.RWeight, 100
	case "maxload":
		num = &a.MaxLoad
	case "cc":
		num = &a.CC
	case "latency":
		num = &a.Latency
	default:
		return nil // kept in Pairs only
	}
	n, err := strconv.ParseInt(v, 10, 32)
	if err != nil || int(n) < lo || int(n) > hi {
		return fmt.Errorf("%s %q: must be an integer %d..%d", name, v, lo, hi)
	}
	if !dup {
		*num = int(n)
	}
	return nil
}

// checkSocket validates Kamailio's socket syntax proto:host[:port].
func checkSocket(v string) error {
	proto, hp, ok := strings.Cut(v, ":")
	if !ok {
		return fmt.Errorf("%q: want proto:host[:port]", v)
	}
	switch strings.ToLower(proto) {
	case "udp", "tcp", "tls", "sctp", "ws", "wss":
	default:
		return fmt.Errorf("%q: unknown protocol %q", v, proto)
	}
	if _, _, err := splitHostPort(hp); err != nil {
		return fmt.Errorf("%q: %w", v, err)
	}
	return nil
}

// ParseExtraAttrs parses ds_db_extra_attrs, "aname=column;...": each
// attribute name with the table column whose value it takes. A column is
// an SQL identifier (letters, digits, '_'), as it is written into the query.
func ParseExtraAttrs(s string) ([]Attr, error) {
	pairs, err := parseParams(strings.TrimSuffix(s, ";"))
	if err != nil {
		return nil, err
	}
	for _, p := range pairs {
		if p.Value == "" {
			return nil, fmt.Errorf("%q has no column (want name=column)", p.Name)
		}
		for _, c := range p.Value {
			if !(c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
				return nil, fmt.Errorf("column %q: only letters, digits and '_'", p.Value)
			}
		}
	}
	return pairs, nil
}

// parseParams splits `name[=value];...` as Kamailio's parse_params does, but
// reports as errors the cases Kamailio silently truncates (a ',' or '>'
// between parameters) or accepts with an empty name.
func parseParams(s string) ([]Attr, error) {
	var out []Attr
	s = trimLWS(s)
	if s == "" {
		return nil, nil
	}
	for {
		// Name: up to whitespace, ',', '=' or ';'.
		i := 0
		for i < len(s) && !isLWS(s[i]) && s[i] != ',' && s[i] != '=' && s[i] != ';' {
			i++
		}
		p := Attr{Name: s[:i]}
		if p.Name == "" {
			return nil, fmt.Errorf("empty name at %q", s)
		}
		s = trimLWS(s[i:])
		if s != "" && s[0] == '=' {
			s = trimLWS(s[1:])
			switch {
			case s == "":
			case s[0] == '"' || s[0] == '\'':
				end := strings.IndexByte(s[1:], s[0])
				if end < 0 {
					return nil, fmt.Errorf("unterminated quoted value of %q", p.Name)
				}
				p.Value, s = s[1:1+end], s[2+end:]
			default:
				j := 0
				for j < len(s) && !isLWS(s[j]) && s[j] != ',' && s[j] != ';' {
					j++
				}
				p.Value, s = s[:j], s[j:]
			}
			s = trimLWS(s)
		}
		out = append(out, p)
		if s == "" {
			return out, nil
		}
		if s[0] != ';' {
			return nil, fmt.Errorf("unexpected %q after %q, want ';'", s[0], p.Name)
		}
		s = trimLWS(s[1:])
		if s == "" {
			return nil, fmt.Errorf("name missing after ';'")
		}
	}
}

// isLWS reports the characters Kamailio's parsers skip as whitespace.
func isLWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimLWS(s string) string {
	for s != "" && isLWS(s[0]) {
		s = s[1:]
	}
	return s
}
