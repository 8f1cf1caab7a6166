package sip

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/resolve/resolvetest"
)

// A destination named by a host name, end to end with real sockets and a
// real DNS server: its SRV record sends calls to the gateway's port (an A
// lookup would give 5060), a request from that gateway's address matches
// from_set, and when the record moves to another gateway both follow within
// the TTL and the refresh interval.
func TestHostNameDestination(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) { testHostNameDestination(t, mode) })
	}
}

func testHostNameDestination(t *testing.T, mode string) {
	gwA, gwB := newGatewayOn(t, "answer", "127.0.53.1"), newGatewayOn(t, "answer", "127.0.53.2")
	srvRecord := func(g *gateway, name string) []string {
		return []string{
			fmt.Sprintf("_sip._udp.gw.test. 1 IN SRV 10 0 %d %s.gw.test.", g.port, name),
			fmt.Sprintf("%s.gw.test. 1 IN A %s", name, g.ip),
		}
	}
	dnsSrv := resolvetest.Start(t, srvRecord(gwA, "a")...)

	res, err := NewDestResolver(DNSConfig{
		Mode:     dispatch.DNSModeInit | dispatch.DNSModeTimer | dispatch.DNSModeSRV,
		Interval: 300 * time.Millisecond,
		Servers:  []string{dnsSrv.Addr},
	}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go res.Run(ctx)

	dest, err := dispatch.NewDestination(1, "sip:gw.test", 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := dispatch.DefaultConfig()
	reg, err := actors.NewRegistry(&cfg, []dispatch.Set{{ID: 1, Dests: []dispatch.Destination{dest}}},
		actors.Options{Seed: 1, Logger: testLogger(), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	// Requests from a gateway of set 1 (any port) are answered 480 here;
	// everything else is dispatched to set 1.
	routes, err := NewRouter([]RouteConfig{
		{Name: "from-gw", Match: MatchConfig{FromSet: SetID(1), FromSetMode: intp(1)}, Reply: &ReplyConfig{Code: 480, Reason: "From Gateway"}},
		{Name: "out", Dispatch: &DispatchConfig{Set: 1, Alg: int(dispatch.AlgRoundRobin)}},
	}, 1)
	if err != nil {
		t.Fatal(err)
	}
	pcfg := testConfig(mode)
	pcfg.Resolver = res
	_, proxy := startProxy(t, pcfg, reg, routes)

	// The load-time resolution (DNSModeInit) fills the from_set addresses.
	waitFor(t, "the load-time lookup", 10*time.Second, func() bool { return optionsFrom(t, gwA.ip, proxy) == 480 })
	if code := optionsFrom(t, gwB.ip, proxy); code != 200 {
		t.Fatalf("OPTIONS from the other gateway's address: %d, want it dispatched (200)", code)
	}
	u := newUAC(t)
	if resp, _ := u.call(t, proxy); resp.StatusCode != 200 || gwA.invites.Load() != 1 || gwB.invites.Load() != 0 {
		t.Fatalf("call: %d; INVITEs A %d, B %d: want one at A, the SRV target", resp.StatusCode, gwA.invites.Load(), gwB.invites.Load())
	}

	dnsSrv.Set(t, srvRecord(gwB, "b")...)
	waitFor(t, "a call at B after the record moved", 10*time.Second, func() bool {
		u.call(t, proxy)
		return gwB.invites.Load() > 0
	})
	waitFor(t, "from_set following the record", 10*time.Second, func() bool {
		return optionsFrom(t, gwB.ip, proxy) == 480 && optionsFrom(t, gwA.ip, proxy) == 200
	})
}

// optionsFrom sends an OPTIONS from a UDP socket of ip to the proxy and
// returns the final status code, 0 when none comes within 5 s.
func optionsFrom(t *testing.T, ip, proxy string) int {
	t.Helper()
	c, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	to, err := net.ResolveUDPAddr("udp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	local := c.LocalAddr().String()
	branch := sipmsg.GenerateBranch()
	msg := "OPTIONS sip:+15550100@pstn.example.net SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + local + ";branch=" + branch + ";rport\r\n" +
		"Max-Forwards: 70\r\n" +
		"From: <sip:probe@" + local + ">;tag=" + sipmsg.GenerateTagN(8) + "\r\n" +
		"To: <sip:+15550100@pstn.example.net>\r\n" +
		"Call-ID: " + sipmsg.GenerateTagN(16) + "\r\n" +
		"CSeq: 1 OPTIONS\r\n" +
		"Content-Length: 0\r\n\r\n"
	if _, err := c.WriteTo([]byte(msg), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_ = c.SetReadDeadline(deadline)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return 0
		}
		line, _ := bufio.NewReader(strings.NewReader(string(buf[:n]))).ReadString('\n')
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		if code, err := strconv.Atoi(f[1]); err == nil && code >= 200 {
			return code
		}
	}
}

// Which addresses from_set compares for a host-name destination, per
// ds_dns_mode and ds_dns_match_all (Kamailio's ds_is_addr_from_set).
func TestDestResolverEndpoints(t *testing.T) {
	dnsSrv := resolvetest.Start(t,
		"multi.test. 60 IN A 127.0.54.1",
		"multi.test. 60 IN A 127.0.54.2",
		"_sip._udp.multi.test. 60 IN SRV 10 0 5070 t.multi.test.",
		"t.multi.test. 60 IN A 127.0.54.3",
	)
	ep := func(ip string, port int) actors.Endpoint {
		return actors.Endpoint{Addr: netip.MustParseAddr(ip), Port: port, Transport: "udp"}
	}
	tests := []struct {
		name     string
		mode     int
		matchAll bool
		flags    dispatch.Flags
		want     []actors.Endpoint
	}{
		{"mode 1: the first A record at the URI's port", 1, false, 0, []actors.Endpoint{ep("127.0.54.1", 5060)}},
		{"mode 1, match all: every A record", 1, true, 0, []actors.Endpoint{ep("127.0.54.1", 5060), ep("127.0.54.2", 5060)}},
		{"mode 9: the SRV target", 9, true, 0, []actors.Endpoint{ep("127.0.54.3", 5070)}},
		{"mode 2: looked up on use", 2, false, 0, []actors.Endpoint{ep("127.0.54.1", 5060)}},
		{"mode 0: never resolved for from_set", 0, false, 0, nil},
		{"no-DNS flag", 1, true, dispatch.FlagNoDNS, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewDestResolver(DNSConfig{Mode: tt.mode, MatchAll: tt.matchAll, Servers: []string{dnsSrv.Addr}}, testLogger())
			if err != nil {
				t.Fatal(err)
			}
			d, err := dispatch.NewDestination(1, "sip:multi.test", tt.flags, 0, "")
			if err != nil {
				t.Fatal(err)
			}
			r.Loaded([]dispatch.Destination{d})
			select {
			case <-r.loaded: // what Run would do now
				r.refreshAll(context.Background())
			default:
			}
			if got := r.Endpoints(&d); !slices.Equal(got, tt.want) {
				t.Errorf("Endpoints = %v, want %v", got, tt.want)
			}
		})
	}
}

// ds_dns_mode 4: the names are resolved at load and again on every tick of
// the ds_dns_interval clock, whatever their TTL; from_set reads the cache
// only, so nothing else asks DNS in between.
func TestDestResolverInterval(t *testing.T) {
	dnsSrv := resolvetest.Start(t, "timer.test. 3600 IN A 127.0.55.1")
	r, err := NewDestResolver(DNSConfig{Mode: dispatch.DNSModeTimer, Interval: time.Hour, Servers: []string{dnsSrv.Addr}}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	tick := make(chan time.Time)
	var every time.Duration
	r.ticker = func(d time.Duration) (<-chan time.Time, func()) { every = d; return tick, func() {} }
	d, err := dispatch.NewDestination(1, "sip:timer.test:5070", 0, 0, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r.Loaded([]dispatch.Destination{d})
	go r.Run(ctx)
	first := []actors.Endpoint{{Addr: netip.MustParseAddr("127.0.55.1"), Port: 5070, Transport: "udp"}}
	waitFor(t, "the load-time lookup", 10*time.Second, func() bool { return slices.Equal(r.Endpoints(&d), first) })
	if every != time.Hour {
		t.Fatalf("ticker every %v, want ds_dns_interval (1h)", every)
	}

	dnsSrv.Set(t, "timer.test. 3600 IN A 127.0.55.2")
	for range 3 {
		if got := r.Endpoints(&d); !slices.Equal(got, first) {
			t.Fatalf("before the tick: %v", got)
		}
	}
	if n := dnsSrv.Asked("timer.test", "A"); n != 1 {
		t.Fatalf("A asked %d times before the tick, want 1 (at load)", n)
	}
	tick <- time.Now()
	second := []actors.Endpoint{{Addr: netip.MustParseAddr("127.0.55.2"), Port: 5070, Transport: "udp"}}
	waitFor(t, "the interval's lookup", 10*time.Second, func() bool { return slices.Equal(r.Endpoints(&d), second) })
	if n := dnsSrv.Asked("timer.test", "A"); n != 2 {
		t.Fatalf("A asked %d times after one tick, want 2", n)
	}
}
