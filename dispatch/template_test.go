package dispatch

import (
	"strings"
	"testing"
)

func templateRequest() *Request {
	return &Request{
		Method:    "INVITE",
		CallID:    " a84b4c76e66710@pc33.atlanta.com ",
		RURI:      "sip:bob@biloxi.com:5070;transport=tcp",
		From:      "sip:alice@atlanta.com",
		To:        "sip:bob@[2001:db8::1]",
		AuthUser:  "alice@atlanta.com",
		UserAgent: "softphone/1.0",
		SrcIP:     "192.0.2.10",
		SrcPort:   5062,
		Proto:     "udp",
		Headers:   []Header{{"X-Tenant", "t1"}, {"x-tenant", "t2"}, {"X-Empty", ""}},
	}
}

func TestTemplateAppend(t *testing.T) {
	ds := &DSVars{Set: 7, URI: "sip:gw1.example.com", DUID: "gw1", Attrs: "duid=gw1;weight=50", Count: 3}
	tests := []struct {
		tmpl string
		ds   *DSVars
		want string
	}{
		{"", nil, ""},
		{"plain text", nil, "plain text"},
		{"$fU@$ci", nil, "alice@a84b4c76e66710@pc33.atlanta.com"},
		{"$(fU)x", nil, "alicex"},
		{"$fu|$fd", nil, "sip:alice@atlanta.com|atlanta.com"},
		{"$tu|$tU|$td", nil, "sip:bob@[2001:db8::1]|bob|[2001:db8::1]"},
		{"$ru|$rU|$rd|$rp", nil, "sip:bob@biloxi.com:5070;transport=tcp|bob|biloxi.com|5070"},
		{"$si:$sp", nil, "192.0.2.10:5062"},
		{"[$au] [$ua] [$rm]", nil, "[alice] [softphone/1.0] [INVITE]"},
		{"$hdr(X-Tenant)/$hdr( x-TENANT )/$(hdr(X-Tenant))", nil, "t1/t1/t1"},
		{"<$hdr(X-Empty)>", nil, "<>"},
		{"$hdr(X-Missing)", nil, "<null>"},
		{"$ds.set $ds.uri $ds.duid $ds.attrs $ds.count", ds, "7 sip:gw1.example.com gw1 duid=gw1;weight=50 3"},
		{"$ds.set/$ds.duid", nil, "<null>/<null>"},
		{"$ds.duid", &DSVars{Set: 1}, "<null>"},
		{"100% $rm.", nil, "100% INVITE."},
	}
	req := templateRequest()
	for _, tt := range tests {
		tmpl, err := ParseTemplate(tt.tmpl)
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tt.tmpl, err)
			continue
		}
		prefix := []byte("pre:")
		got := tmpl.Append(prefix, req, tt.ds)
		if string(got) != "pre:"+tt.want {
			t.Errorf("%q expands to %q, want %q", tt.tmpl, got, "pre:"+tt.want)
		}
	}
}

func TestTemplateNullsAndDefaults(t *testing.T) {
	req := &Request{RURI: "sip:biloxi.com;transport=TLS", From: "sip:atlanta.com", To: "garbage"}
	tmpl, err := ParseTemplate("$fU|$fd|$tU|$td|$rU|$rp|$ci|$ua|$sp|$au")
	if err != nil {
		t.Fatal(err)
	}
	got := string(tmpl.Append(nil, req, nil))
	want := "<null>|atlanta.com|<null>|<null>|<null>|5061|<null>|<null>|<null>|<null>"
	if got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	for ruri, port := range map[string]string{
		"sip:biloxi.com":                "5060",
		"sips:biloxi.com":               "5060", // Kamailio's $rp looks at transport, not scheme
		"sip:biloxi.com:5080;transport": "5080",
		"not a uri":                     "<null>",
	} {
		tp, _ := ParseTemplate("$rp")
		if got := string(tp.Append(nil, &Request{RURI: ruri}, nil)); got != port {
			t.Errorf("$rp of %q = %q, want %q", ruri, got, port)
		}
	}
}

func TestParseTemplateErrors(t *testing.T) {
	tests := []struct{ tmpl, wantIn string }{
		{"$fx", `unknown variable "$fx"`},
		{"abc $ciX", `offset 4: unknown variable "$ciX"`},
		{"$ds.nope", `unknown variable "$ds.nope"`},
		{"$ds", `unknown variable "$ds"`},
		{"$", "offset 0: '$' without a variable name"},
		{"x$ ", "offset 1: '$' without a variable name"},
		{"$hdr(X", "unterminated variable"},
		{"$(ci", "unterminated variable"},
		{"$hdr()", "bad header name"},
		{"$hdr(a b)", "bad header name"},
		{"$hdr", `unknown variable "$hdr"`},
		{"$ru$avp(x)", `offset 3: unknown variable "$avp"`},
	}
	for _, tt := range tests {
		_, err := ParseTemplate(tt.tmpl)
		if err == nil {
			t.Errorf("ParseTemplate(%q) succeeded, want error containing %q", tt.tmpl, tt.wantIn)
			continue
		}
		if !strings.Contains(err.Error(), tt.wantIn) {
			t.Errorf("ParseTemplate(%q) = %v, want it to contain %q", tt.tmpl, err, tt.wantIn)
		}
	}
}

func TestTemplateAppendAllocs(t *testing.T) {
	tmpl, err := ParseTemplate("$fU@$ci;$rd:$rp;$hdr(X-Tenant);$sp")
	if err != nil {
		t.Fatal(err)
	}
	req := templateRequest()
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = tmpl.Append(buf[:0], req, nil) }); n != 0 {
		t.Fatalf("Append allocates %v times with a large enough buffer", n)
	}
}

func FuzzTemplate(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzTemplate.
	f.Add("$fU@$ci")
	f.Add("$hdr(X-A)$(ds.uri)")
	f.Fuzz(func(t *testing.T, s string) {
		tmpl, err := ParseTemplate(s)
		if err != nil {
			if !strings.Contains(err.Error(), "offset ") {
				t.Fatalf("error without an offset: %v", err)
			}
			return
		}
		req := templateRequest()
		out := tmpl.Append(nil, req, &DSVars{Set: 1, URI: "sip:x"})
		if !strings.Contains(s, "$") && string(out) != s {
			t.Fatalf("literal template %q expanded to %q", s, out)
		}
		_ = tmpl.Append(nil, &Request{}, nil)
	})
}
