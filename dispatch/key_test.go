package dispatch

import (
	"strings"
	"testing"
)

func TestURIHashKeys(t *testing.T) {
	tests := []struct {
		uri        string
		userOnly   bool
		user, host string
		ok         bool
	}{
		{"sip:alice@atlanta.com", false, "alice", "atlanta.com", true},
		{"sip:alice@atlanta.com:5060", false, "alice", "atlanta.com", true},
		{"sip:alice@atlanta.com:05060", false, "alice", "atlanta.com", true}, // port number, not text
		{"sip:alice@atlanta.com:5080", false, "alice", "atlanta.com:5080", true},
		{"sip:alice@atlanta.com:5061", false, "alice", "atlanta.com:5061", true},
		{"sips:alice@atlanta.com:5061", false, "alice", "atlanta.com", true},
		{"sips:alice@atlanta.com:5060", false, "alice", "atlanta.com:5060", true},
		{"SIP:alice@atlanta.com:5080;transport=tcp", false, "alice", "atlanta.com:5080", true},
		{"sip:alice@atlanta.com;transport=tls", false, "alice", "atlanta.com", true},
		{"sip:alice@atlanta.com?subject=x", false, "alice", "atlanta.com", true},
		{"sip:alice:secret@atlanta.com:5070", false, "alice", "atlanta.com:5070", true},
		{"sip:alice@atlanta.com:5080", true, "alice", "", true},
		{"sip:atlanta.com", false, "", "atlanta.com", true},
		{"sip:atlanta.com:5080;lr", false, "", "atlanta.com:5080", true},
		{"sip:atlanta.com:5080", true, "", "", true},
		{"sip:alice@[2001:db8::1]", false, "alice", "[2001:db8::1]", true},
		{"sip:alice@[2001:db8::1]:5070", false, "alice", "[2001:db8::1]:5070", true},
		{"sip:[2001:db8::1]:5060;transport=udp", false, "", "[2001:db8::1]", true},
		{"sip:+15551234;npdi@gw.example.com", false, "+15551234;npdi", "gw.example.com", true},
		// phone2tel (verified against Kamailio 5.6, integration TestSameGatewayAsKamailio):
		// user=phone ends the user at ';' and makes 5060 the default port even for sips.
		{"sip:+4930123;isub=12@h.example;user=phone", false, "+4930123", "h.example", true},
		{"sip:+4930123;isub=12@h.example;USER=Phone", true, "+4930123", "", true},
		{"sips:alice@pbx.example:5060;user=phone", false, "alice", "pbx.example", true},
		{"sips:alice@pbx.example:5061;user=phone", false, "alice", "pbx.example:5061", true},
		{"sip:+4930123;isub=12@h.example;user=ip", false, "+4930123;isub=12", "h.example", true},
		{"sip:alice@192.0.2.1:", false, "alice", "192.0.2.1:", true}, // empty port: present, number 0
		{"  sip:alice@atlanta.com\r\n", false, "alice", "atlanta.com", true},
		{"tel:+15551234;phone-context=x", false, "+15551234", "", true},
		{"sip:@atlanta.com", false, "", "", false},
		{"sip:alice@", false, "", "", false},
		{"sip:alice@atlanta.com:50a0", false, "", "", false},
		{"sip:alice@atlanta.com:123456", false, "", "", false},
		{"sip:alice@[2001:db8::1", false, "", "", false},
		{"sip:alice@[2001:db8::1]x", false, "", "", false},
		{"sip:a[b@atlanta.com", false, "", "", false},
		{"sip:alice@bob@atlanta.com", false, "", "", false},
		{"http://atlanta.com", false, "", "", false},
		{"alice@atlanta.com", false, "", "", false},
		{"sip:", false, "", "", false},
		{"", false, "", "", false},
	}
	for _, tt := range tests {
		user, host, ok := URIHashKeys(tt.uri, tt.userOnly)
		if ok != tt.ok || user != tt.user || host != tt.host {
			t.Errorf("URIHashKeys(%q, %v) = %q, %q, %v; want %q, %q, %v",
				tt.uri, tt.userOnly, user, host, ok, tt.user, tt.host, tt.ok)
		}
	}
}

func TestURIHashKeysMatchKamailioHash(t *testing.T) {
	// ds_hash_fromuri of sip:alice@atlanta.com:5080 is ds_get_hash("alice",
	// "atlanta.com:5080") = 3776158421 (docs/operations.md, "dispatcher.hash").
	user, host, _ := URIHashKeys("sip:alice@atlanta.com:5080;transport=udp", false)
	if got := Hash(user, host); got != 3776158421 {
		t.Fatalf("hash = %d, want 3776158421", got)
	}
}

func TestCallIDKey(t *testing.T) {
	for in, want := range map[string]string{
		"abc":                "abc",
		" \tabc\r\n":         "abc",
		"a b":                "a b",
		"\r\n":               "",
		"a84b4c76e66710@pc3": "a84b4c76e66710@pc3",
	} {
		if got := CallIDKey(in); got != want {
			t.Errorf("CallIDKey(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthUserKey(t *testing.T) {
	// Kamailio's parse_username: longer than two bytes loses "@domain", then
	// anything up to a ':'.
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice", "alice", true},
		{"alice@atlanta.com", "alice", true},
		{"sip:alice@atlanta.com", "alice", true},
		{" alice ", "alice", true},
		{"a@", "a@", true}, // two bytes: kept whole
		{"@atlanta.com", "", false},
		{"", "", false},
		{"  ", "", false},
	}
	for _, tt := range tests {
		got, ok := AuthUserKey(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("AuthUserKey(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestURIHashKeysAllocs(t *testing.T) {
	uri := "sips:alice:pw@[2001:db8::1]:5070;transport=tls?x=y"
	if n := testing.AllocsPerRun(100, func() { _, _, _ = URIHashKeys(uri, false) }); n != 0 {
		t.Fatalf("URIHashKeys allocates %v times", n)
	}
}

func FuzzURIKey(f *testing.F) {
	for _, s := range []string{
		"sip:alice@atlanta.com:5080", "sips:[::1]:5061;transport=tls", "tel:+1555;x=y",
		"sip:a:b@c:1?d@e", "sip:@", "SIPS:x", "sip:[", "sip:a@[]:", "sip:\xff@\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		user, host, ok := URIHashKeys(uri, false)
		if !ok {
			if user != "" || host != "" {
				t.Fatalf("failed parse returned keys %q %q", user, host)
			}
			return
		}
		// Keys are slices of the input, so they must occur in it.
		if !strings.Contains(uri, user) || !strings.Contains(uri, host) {
			t.Fatalf("keys %q %q are not substrings of %q", user, host, uri)
		}
		u, _, ok2 := URIHashKeys(uri, true)
		if !ok2 || u != user {
			t.Fatalf("user-only keys differ: %q vs %q", u, user)
		}
		_ = Hash(user, host)
	})
}
