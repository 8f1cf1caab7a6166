package cluster

import (
	"net"
	"testing"
)

// Outgoing connections come from the bound IP, or from the kernel's choice
// when the bind address is unspecified.
func TestSourceAddr(t *testing.T) {
	for _, c := range []struct {
		bound net.Addr
		want  string // "" = nil
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.5"), Port: 7947}, "127.0.0.5:0"},
		{&net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 7947, Zone: "eth0"}, "[fe80::1%eth0]:0"},
		{&net.TCPAddr{IP: net.IPv4zero, Port: 7947}, ""},
		{&net.TCPAddr{IP: net.IPv6unspecified, Port: 7947}, ""},
		{&net.TCPAddr{Port: 7947}, ""},
		{&net.UDPAddr{IP: net.ParseIP("127.0.0.5"), Port: 7946}, ""},
	} {
		got := sourceAddr(c.bound)
		switch {
		case c.want == "" && got != nil:
			t.Errorf("sourceAddr(%v) = %v, want nil", c.bound, got)
		case c.want != "" && (got == nil || got.String() != c.want):
			t.Errorf("sourceAddr(%v) = %v, want %s", c.bound, got, c.want)
		}
	}
}
