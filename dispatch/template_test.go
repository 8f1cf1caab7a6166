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
		Headers:   HeaderList{{"X-Tenant", "t1"}, {"x-tenant", "t2"}, {"X-Empty", ""}},
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
		{"$ru$avp(x)", `offset 3: $avp(x) has no value here: declare it in dispatcher.hash_pvar_vars`},
		{"$var(y)", `$var(y) has no value here`},
		{"$avp", `unknown variable "$avp"`},
		{"$(ci{s.md5})", "transformation {s.md5} is not supported"},
		{"$(ci{s.tolower}", "unterminated variable"},
		{"$(ci{s.tolower)", "unterminated transformation"},
		{"$(ci[0])", `variable "$ci": indexes [N] are not supported`},
		{"$(ci x)", `unexpected ' '`},
		{"$(ci{s.select,1})", "want {s.select,INDEX,SEPARATOR}"},
		{"$(ci{s.select,a,-})", "index"},
		{"$(ci{s.select,$var(i),-})", "variables as parameters are not supported"},
		{"$(ci{s.select,0,ab})", "the separator must be one character"},
		{"$(ci{s.select,0,\\q})", "unknown separator escape"},
		{"$(ci{s.substr,1})", "want {s.substr,OFFSET,LENGTH}"},
		{"$(ci{s.substr,1,-2})", "length >= 0"},
		{"$(ci{uri.user,1})", "uri.user takes no parameters"},
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

func TestTemplateTransforms(t *testing.T) {
	req := &Request{
		CallID:  "AbC-123@Host.Example",
		RURI:    "sip:+4930123;isub=1@GW.example.com:5080;user=phone",
		From:    "sip:Alice@Atlanta.com",
		Headers: HeaderList{{"X-Tenant", "Acme Corp"}, {"X-Route", "a|b|c"}, {"X-Id", `"A <b>" <sip:Carol@chicago.com;x=1>;tag=9`}},
	}
	tests := []struct{ tmpl, want string }{
		{"$(ci{s.tolower})", "abc-123@host.example"},
		{"$(ci{s.toupper})", "ABC-123@HOST.EXAMPLE"},
		{"$(ci{s.select,0,@})", "AbC-123"},
		{"$(ci{s.select,1,@})", "Host.Example"},
		{"$(ci{s.select,-1,.})", "Example"},
		{"$(ci{s.select,-2,.})", "AbC-123@Host"},
		{"$(ci{s.select,5,@})", ""},  // past the fields: empty, no <null>
		{"$(ci{s.select,-5,@})", ""}, // likewise from the end
		{"$(hdr(X-Route){s.select,2,|})", "c"},
		{"$(hdr(X-Tenant){s.select,1,\\s})", "Corp"},
		{"$(hdr(X-Tenant){s.select,0,\\w}{s.tolower})", "acme"},
		{"$(ci{s.substr,0,3})", "AbC"},
		{"$(ci{s.substr,4,0})", "123@Host.Example"},
		{"$(ci{s.substr,4,100})", "123@Host.Example"},
		{"$(ci{s.substr,-7,3})", "Exa"},
		{"$(ci{s.substr,-7,0})", "Example"},
		{"$(ci{s.substr,-3,7})", "ple"},
		{"[$(ci{s.substr,20,1})]", "[]"},  // offset past the end fails: nothing
		{"[$(ci{s.substr,-21,1})]", "[]"}, // likewise from the end
		{"$(fu{uri.user})", "Alice"},
		{"$(fu{uri.host}{s.tolower})", "atlanta.com"},
		{"$(ru{uri.user})", "+4930123"}, // user=phone: the number ends at ';'
		{"$(ru{uri.host})", "GW.example.com"},
		{"$(hdr(X-Id){nameaddr.uri})", "sip:Carol@chicago.com;x=1"},
		{"$(hdr(X-Id){nameaddr.uri}{uri.user}{s.toupper})", "CAROL"},
		{"$(fu{nameaddr.uri})", "sip:Alice@Atlanta.com"}, // no '<': the whole value
		{"[$(hdr(X-Tenant){uri.user})]", "[]"},           // not a URI: nothing
		{"[$(hdr(X-Missing){s.tolower})]", "[]"},         // no value: nothing, not <null>
		{"[$(tU{s.tolower})]", "[]"},
		{"$(fU{s.tolower})@$ci", "alice@AbC-123@Host.Example"},
	}
	for _, tt := range tests {
		tmpl, err := ParseTemplate(tt.tmpl)
		if err != nil {
			t.Errorf("ParseTemplate(%q): %v", tt.tmpl, err)
			continue
		}
		if got := string(tmpl.Append([]byte("pre:"), req, nil)); got != "pre:"+tt.want {
			t.Errorf("%q expands to %q, want %q", tt.tmpl, got[4:], tt.want)
		}
	}
}

func TestTemplateDeclaredVars(t *testing.T) {
	req := &Request{CallID: "c1", From: "sip:alice@atlanta.com", Headers: HeaderList{{"X-Account", "ACC-7"}}}
	vars := map[string]string{
		"$avp(i:273)":   "$hdr(X-Account)",
		"$var( x )":     "$(fU{s.toupper})-$fd",
		"$avp(s:none)":  "$hdr(X-None)",
		"$var(literal)": "tenant-a",
	}
	tests := []struct{ tmpl, want string }{
		{"$avp(i:273)", "ACC-7"},
		{"$(avp(i:273){s.tolower}{s.select,1,-})", "7"},
		{"$var(x)|$(var(x))", "ALICE-atlanta.com|ALICE-atlanta.com"},
		{"$avp(s:none)", "<null>"}, // one variable without a value stays without one
		{"[$(avp(s:none){s.tolower})]", "[]"},
		{"$var(literal)@$ci", "tenant-a@c1"},
	}
	for _, tt := range tests {
		tmpl, err := ParseTemplateVars(tt.tmpl, vars)
		if err != nil {
			t.Errorf("ParseTemplateVars(%q): %v", tt.tmpl, err)
			continue
		}
		if got := string(tmpl.Append(nil, req, nil)); got != tt.want {
			t.Errorf("%q expands to %q, want %q", tt.tmpl, got, tt.want)
		}
	}
	for tmpl, wantIn := range map[string]string{
		"$avp(i:274)": "$avp(i:274) has no value here",
		"$var(loop)":  "$var(loop): a declared value may not use $avp or $var",
		"$var(bad)":   `$var(bad): template "$nope"`,
	} {
		_, err := ParseTemplateVars(tmpl, map[string]string{"$var(loop)": "$var(loop)", "$var(bad)": "$nope"})
		if err == nil || !strings.Contains(err.Error(), wantIn) {
			t.Errorf("ParseTemplateVars(%q) = %v, want an error containing %q", tmpl, err, wantIn)
		}
	}
}

func TestTemplateAppendAllocs(t *testing.T) {
	tmpl, err := ParseTemplate("$fU@$ci;$rd:$rp;$hdr(X-Tenant);$sp;$(ci{s.tolower}{s.select,0,@}{s.substr,1,4})")
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
