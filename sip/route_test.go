package sip

import (
	"errors"
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/dispatch"
	"gopkg.in/yaml.v3"
)

func intp(n int) *int { return &n }

func TestSplitURI(t *testing.T) {
	tests := []struct {
		in, user, host string
	}{
		{"sip:alice@atlanta.com", "alice", "atlanta.com"},
		{"sip:+15551234@gw.example.com:5080;user=phone", "+15551234", "gw.example.com"},
		{"SIPS:bob:secret@[2001:db8::1]:5061;transport=tls", "bob", "[2001:db8::1]"},
		{"sip:10.0.0.1", "", "10.0.0.1"},
		{"sip:10.0.0.1:5060;lr", "", "10.0.0.1"},
		{"sip:host?subject=x", "", "host"},
		{"sip:alice;tgrp=1@host;transport=udp", "alice;tgrp=1", "host"},
		{"tel:+1-201-555-0123;phone-context=example.com", "+1-201-555-0123", ""},
		{"\"Alice\" <sip:alice@example.org>;tag=1", "alice", "example.org"},
		{"<sip:carol@chicago.com>", "carol", "chicago.com"},
		{"sip:[::1", "", ""},
		{"", "", ""},
		{"garbage", "", ""},
	}
	for _, tt := range tests {
		got := splitURI(tt.in)
		if got.user != tt.user || got.host != tt.host {
			t.Errorf("splitURI(%q) = user %q host %q, want %q %q", tt.in, got.user, got.host, tt.user, tt.host)
		}
	}
}

func TestMatchConditions(t *testing.T) {
	base := func() dispatch.Request {
		return dispatch.Request{
			Method:  "INVITE",
			RURI:    "sip:+4930123@pstn.example.com:5060",
			From:    "sip:alice@customer.example.net",
			To:      "sip:+4930123@pstn.example.com",
			SrcIP:   "192.0.2.10",
			Headers: dispatch.HeaderList{{Name: "X-Tenant", Value: "acme"}},
		}
	}
	tests := []struct {
		name  string
		match MatchConfig
		edit  func(*dispatch.Request)
		want  bool
	}{
		{"empty matches all", MatchConfig{}, nil, true},
		{"method hit", MatchConfig{Methods: []string{"register", "invite"}}, nil, true},
		{"method miss", MatchConfig{Methods: []string{"REGISTER"}}, nil, false},
		{"ruri user hit", MatchConfig{RURIUser: `^\+?[0-9]+$`}, nil, true},
		{"ruri user miss", MatchConfig{RURIUser: `^\+?[0-9]+$`}, func(r *dispatch.Request) { r.RURI = "sip:alice@x" }, false},
		{"ruri user absent", MatchConfig{RURIUser: `^\+?[0-9]+$`}, func(r *dispatch.Request) { r.RURI = "sip:x" }, false},
		{"ruri domain excludes port", MatchConfig{RURIDomain: `^pstn\.example\.com$`}, nil, true},
		{"ruri domain miss", MatchConfig{RURIDomain: `^other\.`}, nil, false},
		{"regex unanchored like Kamailio", MatchConfig{RURIDomain: `example`}, nil, true},
		{"from uri hit", MatchConfig{FromURI: `@customer\.example\.net$`}, nil, true},
		{"from uri miss", MatchConfig{FromURI: `@evil`}, nil, false},
		{"to uri hit", MatchConfig{ToURI: `^sip:\+49`}, nil, true},
		{"to uri miss", MatchConfig{ToURI: `^sip:\+1`}, nil, false},
		{"header regex hit, name case-insensitive", MatchConfig{Header: &HeaderMatch{Name: "x-tenant", Regex: "^acme$"}}, nil, true},
		{"header regex miss", MatchConfig{Header: &HeaderMatch{Name: "X-Tenant", Regex: "^other$"}}, nil, false},
		{"header presence", MatchConfig{Header: &HeaderMatch{Name: "X-Tenant"}}, nil, true},
		{"header absent", MatchConfig{Header: &HeaderMatch{Name: "X-Other"}}, nil, false},
		{"header absent even if regex matches empty", MatchConfig{Header: &HeaderMatch{Name: "X-Other", Regex: ".*"}}, nil, false},
		{"source cidr hit", MatchConfig{Source: "192.0.2.0/24"}, nil, true},
		{"source cidr miss", MatchConfig{Source: "198.51.100.0/24"}, nil, false},
		{"source single address", MatchConfig{Source: "192.0.2.10"}, nil, true},
		{"source list", MatchConfig{Source: "10.0.0.0/8, 192.0.2.0/28"}, nil, true},
		{"source mapped v4 request", MatchConfig{Source: "192.0.2.0/24"}, func(r *dispatch.Request) { r.SrcIP = "::ffff:192.0.2.10" }, true},
		{"source v6", MatchConfig{Source: "2001:db8::/32"}, func(r *dispatch.Request) { r.SrcIP = "[2001:db8::5]" }, true},
		{"source unparsable request", MatchConfig{Source: "0.0.0.0/0"}, func(r *dispatch.Request) { r.SrcIP = "" }, false},
		{"from_set hit", MatchConfig{FromSet: SetID(1)}, nil, true},
		{"from_set miss", MatchConfig{FromSet: SetID(2)}, nil, false},
		{"all must hold", MatchConfig{Methods: []string{"INVITE"}, RURIUser: `^\+`, FromSet: SetID(2)}, nil, false},
		{"all hold", MatchConfig{Methods: []string{"INVITE"}, RURIUser: `^\+`, FromSet: SetID(1), Source: "192.0.2.0/24"}, nil, true},
	}
	fromSet := func(id, _ int) bool { return id == 1 }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRouter([]RouteConfig{{Name: "r", Match: tt.match, Reply: &ReplyConfig{Code: 404}}}, 1)
			if err != nil {
				t.Fatal(err)
			}
			req := base()
			if tt.edit != nil {
				tt.edit(&req)
			}
			got := r.Match(&req, fromSet) != nil
			if got != tt.want {
				t.Fatalf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMatchFirstRouteWins(t *testing.T) {
	r, err := NewRouter([]RouteConfig{
		{Name: "from-gateways", Match: MatchConfig{FromSet: SetID(1)}, Dispatch: &DispatchConfig{Set: 2, Alg: 4}},
		{Name: "pstn", Match: MatchConfig{Methods: []string{"INVITE"}, RURIUser: `^\+?[0-9]+$`}, Dispatch: &DispatchConfig{Set: 1, Alg: 10, Limit: 3}},
		{Name: "reject", Reply: &ReplyConfig{Code: 404, Reason: "Not Here"}},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	gwSource := func(id, _ int) bool { return id == 1 }
	noSet := func(int, int) bool { return false }
	tests := []struct {
		ruri    string
		fromSet func(int, int) bool
		want    string
	}{
		{"sip:+123@x", gwSource, "from-gateways"},
		{"sip:+123@x", noSet, "pstn"},
		{"sip:+123@x", nil, "pstn"},
		{"sip:bob@x", noSet, "reject"},
	}
	for _, tt := range tests {
		got := r.Match(&dispatch.Request{Method: "INVITE", RURI: tt.ruri}, tt.fromSet)
		if got == nil || got.Name != tt.want {
			t.Errorf("%s: got %+v, want route %s", tt.ruri, got, tt.want)
		}
	}
	rt := r.Match(&dispatch.Request{Method: "INVITE", RURI: "sip:+1@x"}, noSet)
	if rt.Dispatch == nil || rt.Dispatch.Set != 1 || rt.Dispatch.Alg != dispatch.AlgCallLoad || rt.Dispatch.Limit != 3 || rt.Dispatch.Domain {
		t.Errorf("pstn dispatch = %+v", rt.Dispatch)
	}
	rej := r.Routes()[2]
	if rej.Dispatch != nil || rej.Reply == nil || rej.Reply.Code != 404 || rej.Reply.Reason != "Not Here" {
		t.Errorf("reject = %+v", rej)
	}
}

func TestNoMatchIsNil(t *testing.T) {
	r, err := NewRouter([]RouteConfig{{Name: "only-invite", Match: MatchConfig{Methods: []string{"INVITE"}}, Dispatch: &DispatchConfig{Set: 1}}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	if rt := r.Match(&dispatch.Request{Method: "MESSAGE"}, nil); rt != nil {
		t.Fatalf("MESSAGE matched %q, want nil (404)", rt.Name)
	}
}

func TestDefaultRoute(t *testing.T) {
	r, err := NewRouter(nil, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"INVITE", "MESSAGE", "SUBSCRIBE"} {
		rt := r.Match(&dispatch.Request{Method: m, RURI: "sip:anything@anywhere"}, nil)
		if rt == nil || rt.Name != DefaultRouteName || rt.Dispatch == nil {
			t.Fatalf("%s: route %+v, want the default dispatch route", m, rt)
		}
		if rt.Dispatch.Set != 7 || rt.Dispatch.Alg != dispatch.AlgRoundRobin || rt.Dispatch.Domain || rt.Dispatch.Limit != 0 || rt.Dispatch.Mark != nil {
			t.Fatalf("default dispatch = %+v", rt.Dispatch)
		}
	}
}

func TestFailoverOn(t *testing.T) {
	tests := []struct {
		name string
		on   []string
		yes  []int
		no   []int
	}{
		{"default 408 and 5xx", nil, []int{408, 500, 503, 599}, []int{404, 486, 600, 603, 200, 180}},
		{"explicit none", []string{}, nil, []int{408, 500, 503}},
		{"spec example", []string{"408", "5xx", "6xx"}, []int{408, 500, 503, 603}, []int{404, 486}},
		{"timeout keyword and code", []string{"timeout", "503"}, []int{408, 503}, []int{500, 502}},
		{"upper-case class", []string{"4XX"}, []int{400, 486, 499}, []int{500}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewRouter([]RouteConfig{{Dispatch: &DispatchConfig{Set: 1, Failover: FailoverConfig{On: tt.on}}}}, 1)
			if err != nil {
				t.Fatal(err)
			}
			d := r.Routes()[0].Dispatch
			for _, c := range tt.yes {
				if !d.FailoverOn(c) {
					t.Errorf("FailoverOn(%d) = false, want true", c)
				}
			}
			for _, c := range tt.no {
				if d.FailoverOn(c) {
					t.Errorf("FailoverOn(%d) = true, want false", c)
				}
			}
		})
	}
}

// TestFailoverOnFromYAML pins the YAML forms: an absent `on` takes the
// default, `on: []` turns failover off, and numbers decode like strings.
func TestFailoverOnFromYAML(t *testing.T) {
	tests := []struct {
		doc      string
		want503  bool
		want408  bool
		want603  bool
		wantNone bool
	}{
		{"set: 1", true, true, false, false},
		{"set: 1\nfailover: {on: []}", false, false, false, true},
		{"set: 1\nfailover: {on: [503, 6xx]}", true, false, true, false},
	}
	for _, tt := range tests {
		var c DispatchConfig
		if err := yaml.Unmarshal([]byte(tt.doc), &c); err != nil {
			t.Fatalf("%q: %v", tt.doc, err)
		}
		r, err := NewRouter([]RouteConfig{{Dispatch: &c}}, 1)
		if err != nil {
			t.Fatalf("%q: %v", tt.doc, err)
		}
		d := r.Routes()[0].Dispatch
		if d.FailoverOn(503) != tt.want503 || d.FailoverOn(408) != tt.want408 || d.FailoverOn(603) != tt.want603 {
			t.Errorf("%q: 503=%v 408=%v 603=%v", tt.doc, d.FailoverOn(503), d.FailoverOn(408), d.FailoverOn(603))
		}
	}
}

func TestDispatchFields(t *testing.T) {
	r, err := NewRouter([]RouteConfig{
		{Name: "dom", Dispatch: &DispatchConfig{Set: 3, Alg: 16, Mode: "domain", Limit: 2}},
		{Name: "odd-alg", Dispatch: &DispatchConfig{Set: 0, Alg: 42, Mode: "DST"}},
		{Name: "refuse", Reply: &ReplyConfig{Code: 480}},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	dom := r.Routes()[0].Dispatch
	if !dom.Domain || dom.Set != 3 || dom.Alg != dispatch.AlgRendezvous || dom.Limit != 2 {
		t.Errorf("dom = %+v", dom)
	}
	odd := r.Routes()[1].Dispatch
	if odd.Domain || odd.Alg.Known() || int(odd.Alg) != 42 {
		t.Errorf("odd-alg = %+v; an unknown algorithm is kept (Kamailio: first entry) and flagged by Known()", odd)
	}
	if rep := r.Routes()[2].Reply; rep.Code != 480 || rep.Reason != "Temporarily Unavailable" {
		t.Errorf("reply without reason = %+v, want the standard phrase", rep)
	}
}

func TestNewRouterErrors(t *testing.T) {
	ok := &DispatchConfig{Set: 1}
	tests := []struct {
		name  string
		route RouteConfig
		want  []string // substrings, each must appear
	}{
		{"neither", RouteConfig{Name: "x"}, []string{`routes[0] "x": dispatch: a route needs dispatch or reply`}},
		{"both", RouteConfig{Name: "x", Dispatch: ok, Reply: &ReplyConfig{Code: 404}}, []string{"either dispatch or reply"}},
		{"bad ruri_user", RouteConfig{Name: "x", Match: MatchConfig{RURIUser: "(["}, Dispatch: ok}, []string{"match.ruri_user:", "missing closing ]"}},
		{"bad ruri_domain", RouteConfig{Name: "x", Match: MatchConfig{RURIDomain: "*a"}, Dispatch: ok}, []string{"match.ruri_domain:"}},
		{"bad from_uri", RouteConfig{Name: "x", Match: MatchConfig{FromURI: "a("}, Dispatch: ok}, []string{"match.from_uri:"}},
		{"bad to_uri", RouteConfig{Name: "x", Match: MatchConfig{ToURI: "a)"}, Dispatch: ok}, []string{"match.to_uri:"}},
		{"bad header regex", RouteConfig{Name: "x", Match: MatchConfig{Header: &HeaderMatch{Name: "X-A", Regex: "["}}, Dispatch: ok}, []string{"match.header.regex:"}},
		{"bad header name", RouteConfig{Name: "x", Match: MatchConfig{Header: &HeaderMatch{Name: "X A"}}, Dispatch: ok}, []string{"match.header.name:"}},
		{"bad source", RouteConfig{Name: "x", Match: MatchConfig{Source: "10.0.0.0/8, 300.1.1.1/8"}, Dispatch: ok}, []string{`match.source: " 300.1.1.1/8": not an address or CIDR`}},
		{"bad method", RouteConfig{Name: "x", Match: MatchConfig{Methods: []string{"INVITE", "BAD METHOD"}}, Dispatch: ok}, []string{"match.methods[1]:"}},
		{"negative from_set", RouteConfig{Name: "x", Match: MatchConfig{FromSet: SetID(-1)}, Dispatch: ok}, []string{"match.from_set: -1"}},
		{"negative set", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: -2}}, []string{"dispatch.set: -2"}},
		{"negative alg", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Alg: -1}}, []string{"dispatch.alg: -1"}},
		{"bad mode", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Mode: "uri"}}, []string{`dispatch.mode: "uri": must be dst or domain`}},
		{"negative limit", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Limit: -1}}, []string{"dispatch.limit: -1"}},
		{"bad failover word", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Failover: FailoverConfig{On: []string{"503", "busy"}}}}, []string{`dispatch.failover.on[1]: "busy"`}},
		{"failover on 2xx", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Failover: FailoverConfig{On: []string{"200"}}}}, []string{"dispatch.failover.on[0]", "300..699"}},
		{"failover on class 2xx", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Failover: FailoverConfig{On: []string{"2xx"}}}}, []string{"dispatch.failover.on[0]"}},
		{"failover four digits", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Failover: FailoverConfig{On: []string{"5030"}}}}, []string{"dispatch.failover.on[0]"}},
		{"reserved header", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Headers: map[string]string{"Via": "x"}}}, []string{"dispatch.headers.Via: Via is managed by the proxy"}},
		{"bad header to add", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Headers: map[string]string{"X Gw": "x"}}}, []string{"dispatch.headers.X Gw:"}},
		{"multi-line header value", RouteConfig{Name: "x", Dispatch: &DispatchConfig{Set: 1, Headers: map[string]string{"X-Gw": "a\r\nVia: evil"}}}, []string{"dispatch.headers.X-Gw: value must be one line"}},
		{"reply code", RouteConfig{Name: "x", Reply: &ReplyConfig{Code: 180}}, []string{"reply.code: 180"}},
		{"reply code zero", RouteConfig{Name: "x", Reply: &ReplyConfig{}}, []string{"reply.code: 0"}},
		{"reply reason", RouteConfig{Name: "x", Reply: &ReplyConfig{Code: 403, Reason: "No\nWay"}}, []string{"reply.reason: must be one line"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := RouteConfig{Name: "good", Dispatch: &DispatchConfig{Set: 1}}
			_, err := NewRouter([]RouteConfig{tt.route, good}, 1)
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if !strings.Contains(err.Error(), `routes[0] "x"`) {
				t.Errorf("error %q does not name the route", err)
			}
			var re *RouteError
			if !errors.As(err, &re) || re.Index != 0 || re.Name != "x" {
				t.Errorf("error %v is not a *RouteError for routes[0]", err)
			}
		})
	}
}

func TestNewRouterReportsEveryError(t *testing.T) {
	_, err := NewRouter([]RouteConfig{
		{Name: "a", Match: MatchConfig{RURIUser: "("}, Dispatch: &DispatchConfig{Set: 1, Limit: -1}},
		{Name: "b"},
	}, 1)
	if err == nil {
		t.Fatal("no error")
	}
	for _, w := range []string{`routes[0] "a": match.ruri_user`, `routes[0] "a": dispatch.limit`, `routes[1] "b": dispatch`} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

// TestMarkAndHeaders needs dispatch.ParseMarkState and dispatch.ParseTemplate,
// which the state and select branches implement; it fails on the stubs.
func TestMarkAndHeaders(t *testing.T) {
	r, err := NewRouter([]RouteConfig{{
		Name: "pstn",
		Dispatch: &DispatchConfig{Set: 1, Alg: 4, Failover: FailoverConfig{Mark: "ip"},
			Headers: map[string]string{"X-Gw": "$ds.duid", "X-Dispatch-Set": "$ds.set"}},
	}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := r.Routes()[0].Dispatch
	want, _ := dispatch.ParseMarkState("ip")
	if d.Mark == nil || *d.Mark != want {
		t.Errorf("mark = %v, want %v", d.Mark, want)
	}
	if len(d.Headers) != 2 || d.Headers[0].Name != "X-Dispatch-Set" || d.Headers[1].Name != "X-Gw" {
		t.Fatalf("headers = %+v, want X-Dispatch-Set then X-Gw", d.Headers)
	}
	got := d.Headers[0].Value.Append(nil, &dispatch.Request{}, &dispatch.DSVars{Set: 1, DUID: "gw1"})
	if string(got) != "1" {
		t.Errorf("X-Dispatch-Set expands to %q, want 1", got)
	}
	if _, err := NewRouter([]RouteConfig{{Name: "m", Dispatch: &DispatchConfig{Set: 1, Failover: FailoverConfig{Mark: "q"}}}}, 1); err == nil ||
		!strings.Contains(err.Error(), `dispatch.failover.mark: "q"`) {
		t.Errorf("bad mark: err = %v", err)
	}
	if _, err := NewRouter([]RouteConfig{{Name: "h", Dispatch: &DispatchConfig{Set: 1, Headers: map[string]string{"X-A": "$nosuchvar"}}}}, 1); err == nil ||
		!strings.Contains(err.Error(), `dispatch.headers.X-A: "$nosuchvar"`) {
		t.Errorf("bad template: err = %v", err)
	}
}

func BenchmarkMatch(b *testing.B) {
	r, err := NewRouter([]RouteConfig{
		{Name: "from-gw", Match: MatchConfig{FromSet: SetID(9)}, Dispatch: &DispatchConfig{Set: 2}},
		{Name: "src", Match: MatchConfig{Source: "10.0.0.0/8"}, Dispatch: &DispatchConfig{Set: 3}},
		{Name: "pstn", Match: MatchConfig{Methods: []string{"INVITE"}, RURIUser: `^\+?[0-9]+$`}, Dispatch: &DispatchConfig{Set: 1}},
	}, 1)
	if err != nil {
		b.Fatal(err)
	}
	req := &dispatch.Request{Method: "INVITE", RURI: "sip:+4930123@gw.example.com:5060", SrcIP: "192.0.2.1"}
	no := func(int, int) bool { return false }
	b.ReportAllocs()
	for b.Loop() {
		if r.Match(req, no) == nil {
			b.Fatal("no match")
		}
	}
}

// from_set_mode reaches the fromSet callback with the route's mode, and bad
// modes are config errors.
func TestFromSetMode(t *testing.T) {
	one := 1
	r, err := NewRouter([]RouteConfig{
		{Name: "gw-any-port", Match: MatchConfig{FromSet: SetID(one), FromSetMode: intp(1)}, Dispatch: &DispatchConfig{Set: 2, Alg: 4}},
	}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var gotSet, gotMode int
	r.Match(&dispatch.Request{Method: "INVITE", RURI: "sip:a@b"}, func(set, mode int) bool {
		gotSet, gotMode = set, mode
		return true
	})
	if gotSet != 1 || gotMode != 1 {
		t.Fatalf("fromSet called with set %d mode %d, want 1 and 1", gotSet, gotMode)
	}
	for _, bad := range []RouteConfig{
		{Name: "m4", Match: MatchConfig{FromSet: SetID(one), FromSetMode: intp(4)}, Dispatch: &DispatchConfig{Set: 2, Alg: 4}},
		{Name: "no-set", Match: MatchConfig{FromSetMode: intp(2)}, Dispatch: &DispatchConfig{Set: 2, Alg: 4}},
	} {
		if _, err := NewRouter([]RouteConfig{bad}, 2); err == nil || !strings.Contains(err.Error(), "from_set_mode") {
			t.Errorf("route %s: error %v, want one naming from_set_mode", bad.Name, err)
		}
	}
}
