package sip

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// setsDispatcher answers FromSet from fixed destinations the way
// actors.Registry does: port 0 is any port, proto "" any transport, setID < 0
// every set.
type setsDispatcher struct {
	Dispatcher // only FromSet is used
	sets       map[int][]dispatch.Destination
}

func (d setsDispatcher) FromSet(setID int, ip string, port int, proto string) bool {
	for id, dests := range d.sets {
		if setID >= 0 && id != setID {
			continue
		}
		for _, dst := range dests {
			if dst.Host == ip && (port == 0 || dst.EffectivePort() == port) &&
				(proto == "" || strings.EqualFold(dst.EffectiveTransport(), proto)) {
				return true
			}
		}
	}
	return false
}

// from_set without from_set_mode behaves as Kamailio's ds_is_from_list(set)
// and ds_is_from_list(): address and port, any transport
// (ds_is_addr_from_list with DS_MATCH_NOPROTO); an explicit mode wins.
func TestFromSetRouteMatch(t *testing.T) {
	d := setsDispatcher{sets: map[int][]dispatch.Destination{
		1: {{URI: "sip:192.0.2.10:5060", Host: "192.0.2.10", Port: 5060, Transport: "udp"}},
		2: {{URI: "sip:198.51.100.7:5080;transport=udp", Host: "198.51.100.7", Port: 5080, Transport: "udp"}},
	}}
	gw1, gw2, stranger := "192.0.2.10", "198.51.100.7", "203.0.113.1"
	tests := []struct {
		name    string
		set     *FromSet
		mode    *int
		src     string
		port    int
		proto   string
		matched bool
	}{
		{"set 1, udp", SetID(1), nil, gw1, 5060, "udp", true},
		{"set 1, tcp from a udp destination", SetID(1), nil, gw1, 5060, "tcp", true},
		{"set 1, tls from a udp destination", SetID(1), nil, gw1, 5060, "tls", true},
		{"set 1, other port", SetID(1), nil, gw1, 5099, "udp", false},
		{"set 1, gateway of set 2", SetID(1), nil, gw2, 5080, "udp", false},
		{"set 1, stranger", SetID(1), nil, stranger, 5060, "udp", false},
		{"unknown set", SetID(7), nil, gw1, 5060, "udp", false},
		{"any, set 1 gateway over tcp", AnySet(), nil, gw1, 5060, "tcp", true},
		{"any, set 2 gateway", AnySet(), nil, gw2, 5080, "udp", true},
		{"any, set 2 gateway other port", AnySet(), nil, gw2, 5060, "udp", false},
		{"any, stranger", AnySet(), nil, stranger, 5060, "udp", false},
		{"mode 0, udp", SetID(1), intp(0), gw1, 5060, "udp", true},
		{"mode 0, tcp", SetID(1), intp(0), gw1, 5060, "tcp", false},
		{"mode 1, other port", SetID(1), intp(1), gw1, 5099, "udp", true},
		{"mode 1, tcp", SetID(1), intp(1), gw1, 5099, "tcp", false},
		{"mode 2, tcp", SetID(1), intp(2), gw1, 5060, "tcp", true},
		{"mode 2, other port", SetID(1), intp(2), gw1, 5099, "tcp", false},
		{"mode 3, tcp other port", SetID(1), intp(3), gw1, 5099, "tcp", true},
		{"mode 3, stranger", SetID(1), intp(3), stranger, 5099, "tcp", false},
		{"any, mode 0, tcp", AnySet(), intp(0), gw2, 5080, "tcp", false},
		{"any, mode 0, udp", AnySet(), intp(0), gw2, 5080, "udp", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRouter([]RouteConfig{
				{Name: "from-gw", Match: MatchConfig{FromSet: tt.set, FromSetMode: tt.mode}, Reply: &ReplyConfig{Code: 403}},
			}, 1)
			if err != nil {
				t.Fatal(err)
			}
			req := dispatch.Request{Method: "INVITE", RURI: "sip:a@b", SrcIP: tt.src, SrcPort: tt.port, Proto: tt.proto}
			if got := r.Match(&req, fromSetCheck(d, &req)) != nil; got != tt.matched {
				t.Fatalf("matched = %v, want %v", got, tt.matched)
			}
		})
	}
}

// The callback gets set -1 for "any" and the route's effective mode.
func TestFromSetCallbackArgs(t *testing.T) {
	tests := []struct {
		set            *FromSet
		mode           *int
		wantSet, wantM int
	}{
		{SetID(1), nil, 1, DefaultFromSetMode},
		{SetID(0), nil, 0, 2},
		{AnySet(), nil, -1, 2},
		{SetID(1), intp(0), 1, 0},
		{AnySet(), intp(1), -1, 1},
		{SetID(4), intp(3), 4, 3},
	}
	for _, tt := range tests {
		r, err := NewRouter([]RouteConfig{{Name: "r", Match: MatchConfig{FromSet: tt.set, FromSetMode: tt.mode}, Reply: &ReplyConfig{Code: 403}}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		gotSet, gotMode := -9, -9
		r.Match(&dispatch.Request{Method: "INVITE", RURI: "sip:a@b"}, func(set, mode int) bool {
			gotSet, gotMode = set, mode
			return true
		})
		if gotSet != tt.wantSet || gotMode != tt.wantM {
			t.Errorf("from_set %v mode %v: callback got set %d mode %d, want %d and %d", tt.set, tt.mode, gotSet, gotMode, tt.wantSet, tt.wantM)
		}
	}
}

func TestFromSetYAML(t *testing.T) {
	tests := []struct {
		in       string
		want     *FromSet
		wantMode *int
		err      string
	}{
		{in: "from_set: 1", want: SetID(1)},
		{in: "from_set: 0", want: SetID(0)},
		{in: "from_set: any", want: AnySet()},
		{in: `from_set: "any"`, want: AnySet()},
		{in: "from_set: ANY", want: AnySet()},
		{in: "from_set: -1", want: SetID(-1)}, // decodes; NewRouter rejects it
		{in: "from_set: 1\nfrom_set_mode: 0", want: SetID(1), wantMode: intp(0)},
		{in: "from_set: any\nfrom_set_mode: 3", want: AnySet(), wantMode: intp(3)},
		{in: "methods: [INVITE]"},
		{in: "from_set: gateways", err: `line 1: from_set "gateways": want a set id or "any"`},
		{in: "from_set: 1.5", err: `from_set "1.5"`},
		{in: `from_set: "1"`, err: `from_set "1"`},
		{in: "from_set: [1]", err: `line 1: from_set list: want a set id or "any"`},
		{in: "from_set: {id: 1}", err: `line 1: from_set mapping: want a set id or "any"`},
	}
	for _, tt := range tests {
		var m MatchConfig
		err := yaml.Unmarshal([]byte(tt.in), &m)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err = %v, want it to contain %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if (m.FromSet == nil) != (tt.want == nil) || (m.FromSet != nil && *m.FromSet != *tt.want) {
			t.Errorf("%q: from_set = %v, want %v", tt.in, m.FromSet, tt.want)
		}
		if (m.FromSetMode == nil) != (tt.wantMode == nil) || (m.FromSetMode != nil && *m.FromSetMode != *tt.wantMode) {
			t.Errorf("%q: from_set_mode = %v, want %v", tt.in, m.FromSetMode, tt.wantMode)
		}
	}
	for _, f := range []*FromSet{SetID(3), AnySet()} {
		out, err := yaml.Marshal(MatchConfig{FromSet: f})
		if err != nil {
			t.Fatal(err)
		}
		var back MatchConfig
		if err := yaml.Unmarshal(out, &back); err != nil || back.FromSet == nil || *back.FromSet != *f {
			t.Errorf("round trip of %v: %q -> %v, %v", f, out, back.FromSet, err)
		}
	}
}

func TestFromSetValidation(t *testing.T) {
	tests := []struct {
		match MatchConfig
		err   string // "" = valid
	}{
		{MatchConfig{FromSet: SetID(0)}, ""},
		{MatchConfig{FromSet: AnySet()}, ""},
		{MatchConfig{FromSet: AnySet(), FromSetMode: intp(0)}, ""},
		{MatchConfig{FromSet: SetID(2), FromSetMode: intp(3)}, ""},
		{MatchConfig{FromSet: SetID(-1)}, `match.from_set: -1: must be a set id >= 0 or "any"`},
		{MatchConfig{FromSet: SetID(1), FromSetMode: intp(4)}, "match.from_set_mode: 4: must be 0..3"},
		{MatchConfig{FromSet: AnySet(), FromSetMode: intp(-1)}, "match.from_set_mode: -1: must be 0..3"},
		{MatchConfig{FromSetMode: intp(0)}, "match.from_set_mode: 0: needs from_set"},
		{MatchConfig{FromSetMode: intp(2)}, "match.from_set_mode: 2: needs from_set"},
	}
	for _, tt := range tests {
		_, err := NewRouter([]RouteConfig{{Name: "r", Match: tt.match, Reply: &ReplyConfig{Code: 403}}}, 1)
		switch {
		case tt.err == "" && err != nil:
			t.Errorf("%+v: %v", tt.match, err)
		case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
			t.Errorf("%+v: err = %v, want it to contain %q", tt.match, err, tt.err)
		}
	}
}
