package dispatch

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseAttrs(t *testing.T) {
	tests := []struct {
		in   string
		want Attrs
	}{
		{"", Attrs{}},
		{";", Attrs{}},
		{"duid=gw1;maxload=100;weight=50", Attrs{Raw: "duid=gw1;maxload=100;weight=50", DUID: "gw1", MaxLoad: 100, Weight: 50,
			Pairs: []Attr{{"duid", "gw1"}, {"maxload", "100"}, {"weight", "50"}}}},
		{"DUID=X;Weight=0;RWEIGHT=100;", Attrs{Raw: "DUID=X;Weight=0;RWEIGHT=100", DUID: "X", RWeight: 100,
			Pairs: []Attr{{"DUID", "X"}, {"Weight", "0"}, {"RWEIGHT", "100"}}}},
		{"cc=1;latency=40;socket=udp:10.0.0.1:5060;ping_from=sip:ka@x.org;obproxy=sip:10.9.9.9;my=xyz;flag",
			Attrs{Raw: "cc=1;latency=40;socket=udp:10.0.0.1:5060;ping_from=sip:ka@x.org;obproxy=sip:10.9.9.9;my=xyz;flag",
				CC: 1, Latency: 40, Socket: "udp:10.0.0.1:5060", PingFrom: "sip:ka@x.org", OBProxy: "sip:10.9.9.9",
				Pairs: []Attr{{"cc", "1"}, {"latency", "40"}, {"socket", "udp:10.0.0.1:5060"}, {"ping_from", "sip:ka@x.org"},
					{"obproxy", "sip:10.9.9.9"}, {"my", "xyz"}, {"flag", ""}}}},
		// parse_params syntax: blanks around tokens, quoted values.
		{` duid = "a b" ; x='y;z' ;empty=`, Attrs{Raw: ` duid = "a b" ; x='y;z' ;empty=`, DUID: "a b",
			Pairs: []Attr{{"duid", "a b"}, {"x", "y;z"}, {"empty", ""}}}},
		// First of a repeated name wins, as in Kamailio; both stay in Pairs.
		{"weight=10;weight=20", Attrs{Raw: "weight=10;weight=20", Weight: 10, Pairs: []Attr{{"weight", "10"}, {"weight", "20"}}}},
		{"socket=tls:[2001:db8::1]:5061", Attrs{Raw: "socket=tls:[2001:db8::1]:5061", Socket: "tls:[2001:db8::1]:5061",
			Pairs: []Attr{{"socket", "tls:[2001:db8::1]:5061"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseAttrs(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseAttrsGet(t *testing.T) {
	a, err := ParseAttrs("Foo=1;foo=2;bar")
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := a.Get("FOO"); !ok || v != "1" {
		t.Errorf("Get(FOO) = %q %v", v, ok)
	}
	if v, ok := a.Get("bar"); !ok || v != "" {
		t.Errorf("Get(bar) = %q %v", v, ok)
	}
	if _, ok := a.Get("baz"); ok {
		t.Error("Get(baz) found")
	}
}

func TestParseAttrsErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"weight=101", `weight "101": must be an integer 0..100`},
		{"weight=-1", `weight "-1": must be an integer 0..100`},
		{"rweight=abc", `rweight "abc": must be an integer 0..100`},
		{"maxload=12x", `maxload "12x": must be an integer 0..2147483647`},
		{"maxload=", `maxload "": must be an integer 0..2147483647`},
		{"latency=-3", `latency "-3": must be an integer 0..2147483647`},
		{"cc=99999999999", `cc "99999999999": must be an integer 0..2147483647`},
		{"socket=10.0.0.1", `socket: "10.0.0.1": want proto:host[:port]`},
		{"socket=foo:10.0.0.1", `socket: "foo:10.0.0.1": unknown protocol "foo"`},
		{"socket=udp:10.0.0.1:x", `socket: "udp:10.0.0.1:x": bad port "x"`},
		{"ping_from=dispatcher@x", `ping_from "dispatcher@x": must be a sip: or sips: URI`},
		{"obproxy=10.0.0.1", `obproxy "10.0.0.1": must be a sip: or sips: URI`},
		{"=5", `empty name at "=5"`},
		{"a=1;;", `name missing after ';'`},
		{"a=1;;b=2", `empty name at ";b=2"`},
		{`a="open`, `unterminated quoted value of "a"`},
		{"a=1,b=2", `unexpected ',' after "a", want ';'`},
		{"a=1 b=2", `unexpected 'b' after "a", want ';'`},
		{"weight=10;weight=200", `weight "200": must be an integer 0..100`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := ParseAttrs(tt.in)
			if err == nil {
				t.Fatal("no error")
			}
			if want := "bad attrs " + quote(tt.in) + ": " + tt.want; err.Error() != want {
				t.Errorf("error\n %s\nwant\n %s", err, want)
			}
		})
	}
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

// formatAttrs writes pairs back as name=value; values needing it are quoted.
func formatAttrs(pairs []Attr) string {
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString(p.Name)
		if p.Value != "" {
			b.WriteByte('=')
			switch {
			case !strings.ContainsAny(p.Value, " \t\r\n;,'\""):
				b.WriteString(p.Value)
			case !strings.Contains(p.Value, `"`):
				b.WriteString(`"` + p.Value + `"`)
			default: // holds '"'; if it holds '\'' too it cannot be written back
				b.WriteString("'" + p.Value + "'")
			}
		}
	}
	return b.String()
}

// FuzzParseAttrs: never panics; an accepted string re-parses from Raw to the
// same value, and its pairs written back parse to the same pairs and fields.
func FuzzParseAttrs(f *testing.F) {
	for _, s := range []string{"", "duid=a;weight=50", `x="a;b";y='c'`, "maxload=10;cc=1;latency=5",
		"socket=udp:[::1]:5060;ping_from=sip:a@b", "a;b;c=", "weight=101", "a=1,b=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAttrs(s)
		if err != nil {
			return
		}
		again, err := ParseAttrs(a.Raw)
		if err != nil || !reflect.DeepEqual(a, again) {
			t.Fatalf("Raw %q re-parses to %+v, %v; first %+v", a.Raw, again, err, a)
		}
		text := formatAttrs(a.Pairs)
		for _, p := range a.Pairs {
			if strings.Contains(p.Value, `"`) && strings.Contains(p.Value, "'") {
				return // a value holding both quote kinds cannot be written back
			}
		}
		b, err := ParseAttrs(text)
		if err != nil {
			t.Fatalf("written back %q: %v", text, err)
		}
		if len(a.Pairs) != len(b.Pairs) || (len(a.Pairs) > 0 && !reflect.DeepEqual(a.Pairs, b.Pairs)) {
			t.Fatalf("pairs %q -> %q: %+v vs %+v", s, text, a.Pairs, b.Pairs)
		}
		b.Raw, b.Pairs = a.Raw, a.Pairs
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("fields differ after write-back %q: %+v vs %+v", text, a, b)
		}
	})
}
