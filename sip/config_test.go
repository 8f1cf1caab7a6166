package sip

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		errs   []string // substrings the error must hold; none = valid
	}{
		{name: "defaults", change: func(c *Config) {}},
		{name: "ipv6 and tls with cert", change: func(c *Config) {
			c.Listen = []string{"udp:[::1]:5060", "tls:127.0.0.1:5061"}
			c.TLSCert, c.TLSKey = "c.pem", "k.pem"
		}},
		{name: "advertise host only", change: func(c *Config) { c.Advertise = "sip.example.net" }},
		{name: "no listen", change: func(c *Config) { c.Listen = nil }, errs: []string{"at least one"}},
		{name: "listen without port", change: func(c *Config) { c.Listen = []string{"udp:127.0.0.1", "tls:[::1]"}; c.TLSCert, c.TLSKey = "c", "k" }},
		{name: "bad listens", change: func(c *Config) {
			c.Listen = []string{"sctp:127.0.0.1:5060", "udp", "tcp:example.com:5060", "udp:127.0.0.1:70000", "udp:::1:5060"}
		}, errs: []string{`listen[0]: "sctp:127.0.0.1:5060": unknown transport "sctp"`, `listen[1]: "udp": want PROTO`,
			`listen[2]: "tcp:example.com:5060": host "example.com" must be an IP`, "listen[3]", "bad port", "listen[4]", "brackets"}},
		{name: "listed twice", change: func(c *Config) { c.Listen = []string{"udp:127.0.0.1:5060", "UDP:127.0.0.1"} },
			errs: []string{`listen[1]: "UDP:127.0.0.1": listed twice`}},
		{name: "wildcard without advertise", change: func(c *Config) { c.Listen = []string{"udp:0.0.0.0:5060", "tcp::5060"} },
			errs: []string{`"udp:0.0.0.0:5060": a wildcard address needs advertise`, `"tcp::5060": a wildcard`}},
		{name: "tls pair", change: func(c *Config) { c.TLSCert = "c.pem" }, errs: []string{"proxy.tls_key", "go together"}},
		{name: "udp readers", change: func(c *Config) { c.UDPReaders = 65 }, errs: []string{"proxy.udp_readers: 65: must be 0..64"}},
		{name: "wildcard with advertise", change: func(c *Config) { c.Listen = []string{"udp:0.0.0.0:5060"}; c.Advertise = "192.0.2.10" }},
		{name: "tls without cert", change: func(c *Config) { c.Listen = []string{"tls:127.0.0.1:5061"} }, errs: []string{"needs proxy.tls_cert"}},
		{name: "bad advertise port", change: func(c *Config) { c.Advertise = "h:0" }, errs: []string{"advertise"}},
		{name: "everything else", change: func(c *Config) {
			c.Mode = "fast"
			c.MaxForwards = 0
			c.FRTimer = 0
			c.FRInvTimer = -time.Second
			c.RetryAfter = -1
			c.PingInterval = time.Second
			c.PingMethod = "OPT IONS"
			c.PingFrom = "not a uri"
		}, errs: []string{"proxy.mode", "max_forwards", "fr_timer", "fr_inv_timer", "retry_after", "ds_ping_method", "ds_ping_from"}},
		{name: "ping settings unused when probing is off", change: func(c *Config) { c.PingMethod = "" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.change(&c)
			err := c.Validate()
			if len(tc.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate accepted it, want errors %v", tc.errs)
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
		})
	}
}

func TestParseListen(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"udp:127.0.0.1:5060", "udp:127.0.0.1:5060"},
		{"TCP:127.0.0.1", "tcp:127.0.0.1:5060"},
		{"tls:127.0.0.1", "tls:127.0.0.1:5061"},
		{"udp:[::1]:5062", "udp:[::1]:5062"},
		{"udp:[::1]", "udp:[::1]:5060"},
		{"udp:127.0.0.1:0", "udp:127.0.0.1:0"},
		{"tcp::5070", "tcp::5070"},
		{"udp:", ""},
		{"udp:::1", ""},
		{"tls:sip.example.com", ""},
		{"ws:127.0.0.1:80", ""},
		{"udp:127.0.0.1:65536", ""},
	} {
		a, err := ParseListen(tt.in)
		got := ""
		if err == nil {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("ParseListen(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// NewServer refuses an invalid config and reports ports in use.
func TestNewServerErrors(t *testing.T) {
	c := DefaultConfig()
	c.Mode = "bogus"
	if _, err := NewServer(c, nil, nil, nil); err == nil || !strings.Contains(err.Error(), "proxy.mode") {
		t.Fatalf("NewServer with a bad mode: %v", err)
	}
	c = testConfig(ModeStateful)
	c.Listen = []string{"tcp:127.0.0.1:0"}
	s, err := NewServer(c, newFakeDispatcher(nil), fixedRoutes{}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(t.Context())
	c.Listen = []string{"udp:127.0.0.1:0", s.Addrs()[0]}
	if _, err := NewServer(c, newFakeDispatcher(nil), fixedRoutes{}, testLogger()); err == nil || !strings.Contains(err.Error(), "listen "+s.Addrs()[0]) {
		t.Fatalf("NewServer on a port in use: %v", err)
	}
}
