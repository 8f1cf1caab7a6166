package sip

import (
	"net"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// freeUDPPort is a UDP port of 127.0.0.1 that was free a moment ago: the
// socket attributes name listeners by port, so the test must know it first.
func freeUDPPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return itoa(pc.LocalAddr().(*net.UDPAddr).Port)
}

// sentFrom is the source port a gateway saw a request come from, and the
// port of the request's top Via (where responses go).
func sentFrom(t *testing.T, r *sipmsg.Request) (src, via string) {
	t.Helper()
	if r == nil {
		t.Fatal("the gateway got no request")
	}
	_, port, _ := net.SplitHostPort(r.Source())
	return port, itoa(r.Via().Port)
}

// startProxyReady is startProxy, then waits until every UDP listener is in
// sipgo's connection pool: before that, a request leaving from a listener
// not yet served would make sipgo bind that address again and fail (Serve
// starts the UDP listeners one after the other).
func startProxyReady(t *testing.T, cfg Config, d Dispatcher, r Routes) string {
	t.Helper()
	s, addr := startProxy(t, cfg, d, r)
	waitFor(t, "the UDP listeners served", 5*time.Second, func() bool {
		return s.ua.TransportLayer().Pool("udp").Size() >= len(cfg.Listen)
	})
	return addr
}

// TestDestinationSockets: a destination's socket or sockname attribute makes
// the request leave from that listener (source address, Via and
// Record-Route), and the call completes through it, as Kamailio's send
// socket; a destination without one leaves from the first listener, or
// ds_default_sockname's.
func TestDestinationSockets(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			p1, p2 := freeUDPPort(t), freeUDPPort(t)
			gwA, gwB, gwC := newGateway(t, "answer"), newGateway(t, "answer"), newGateway(t, "answer")
			a, b, c := gwA.dest(1), gwB.dest(1), gwC.dest(1)
			a.Attrs.Socket = "udp:127.0.0.1:" + p2
			b.Attrs.Sockname = "second"
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {a, b, c}})
			cfg := testConfig(mode)
			cfg.Listen = []string{"udp:127.0.0.1:" + p1, "udp:127.0.0.1:" + p2 + " name second"}
			proxy := startProxyReady(t, cfg, d, dispatchRoute(1))
			u := newUAC(t)
			for range 3 { // round-robin: a, b, c
				u.call(t, proxy)
			}
			for _, g := range []struct {
				name string
				gw   *gateway
				want string
			}{{"socket", gwA, p2}, {"sockname", gwB, p2}, {"no attribute", gwC, p1}} {
				src, via := sentFrom(t, g.gw.lastInvite.Load())
				if src != g.want || via != g.want {
					t.Errorf("%s: INVITE from port %s, Via port %s; want %s", g.name, src, via, g.want)
				}
				// Our Record-Route on top names the listener towards the
				// gateway; when that is not the one the call came in on
				// (p1), a second one names that (RFC 5658).
				var rrPorts []string
				for _, h := range g.gw.lastInvite.Load().GetHeaders("Record-Route") {
					rrPorts = append(rrPorts, itoa(h.(*sipmsg.RecordRouteHeader).Address.Port))
				}
				wantRR := []string{g.want}
				if g.want != p1 {
					wantRR = append(wantRR, p1)
				}
				if strings.Join(rrPorts, ",") != strings.Join(wantRR, ",") {
					t.Errorf("%s: Record-Route ports %v, want %v", g.name, rrPorts, wantRR)
				}
				if g.gw.byes.Load() != 1 {
					t.Errorf("%s: gateway got %d BYEs, want 1", g.name, g.gw.byes.Load())
				}
			}

			// The same three calls sent to the second listener (p2): a and
			// b leave from where they came in (one Record-Route), c from
			// p1, so two, the lower one naming p2.
			for range 3 {
				u.call(t, "127.0.0.1:"+p2)
			}
			for _, g := range []struct {
				name string
				gw   *gateway
				want string
			}{{"socket", gwA, p2}, {"sockname", gwB, p2}, {"no attribute", gwC, p1 + "," + p2}} {
				var rrPorts []string
				for _, h := range g.gw.lastInvite.Load().GetHeaders("Record-Route") {
					rrPorts = append(rrPorts, itoa(h.(*sipmsg.RecordRouteHeader).Address.Port))
				}
				if got := strings.Join(rrPorts, ","); got != g.want {
					t.Errorf("%s, in on %s: Record-Route ports %s, want %s", g.name, p2, got, g.want)
				}
			}

			// ds_default_sockname: a destination without attributes leaves
			// from the named listener.
			gwD := newGateway(t, "answer")
			cfg.Listen = []string{"udp:127.0.0.1:" + freeUDPPort(t), "udp:127.0.0.1:" + freeUDPPort(t) + " name second"}
			cfg.DefaultSockname = "second"
			proxy2 := startProxyReady(t, cfg, newFakeDispatcher(map[int][]dispatch.Destination{1: {gwD.dest(1)}}), dispatchRoute(1))
			u.call(t, proxy2)
			want := cfg.Listen[1][len("udp:127.0.0.1:"):strings.IndexByte(cfg.Listen[1], ' ')]
			if src, via := sentFrom(t, gwD.lastInvite.Load()); src != want || via != want {
				t.Errorf("ds_default_sockname: INVITE from port %s, Via port %s; want %s", src, via, want)
			}
		})
	}
}

// TestProbeSockets: keepalives leave from the ping_socket attribute's
// listener, else ds_default_sockname's; an obproxy attribute sends them to
// that proxy with the destination's Request-URI; ds_ping_fr_timer bounds the
// wait for an answer instead of fr_timer.
func TestProbeSockets(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) { testProbeSockets(t, mode) })
	}
}

func testProbeSockets(t *testing.T, mode string) {
	p1, p2 := freeUDPPort(t), freeUDPPort(t)
	gwA, gwB, obp := newGateway(t, "answer"), newGateway(t, "answer"), newGateway(t, "answer")
	a, b := gwA.dest(1), gwB.dest(2)
	a.Attrs.PingSocket = "udp:127.0.0.1:" + p1
	// A destination nobody answers for, reached through the proxy.
	c := dispatch.Destination{SetID: 3, URI: "sip:192.0.2.7:5070", Scheme: "sip", Host: "192.0.2.7", Port: 5070}
	c.Attrs.OBProxy = "sip:" + obp.addr
	dead := dispatch.Destination{SetID: 4, URI: "sip:127.0.0.1:" + freeUDPPort(t), Scheme: "sip", Host: "127.0.0.1"}
	dead.Port = atoi(t, dead.URI[len("sip:127.0.0.1:"):])

	d := newFakeDispatcher(nil)
	d.targets = []actors.ProbeTarget{{SetID: 1, Dest: a}, {SetID: 2, Dest: b}, {SetID: 3, Dest: c}, {SetID: 4, Dest: dead}}
	cfg := testConfig(mode)
	cfg.Listen = []string{"udp:127.0.0.1:" + p1, "udp:127.0.0.1:" + p2 + " name second"}
	cfg.DefaultSockname = "second"
	cfg.PingInterval = 100 * time.Millisecond
	cfg.FRTimer = 20 * time.Second
	cfg.PingTimeout = 300 * time.Millisecond
	start := time.Now()
	startProxyReady(t, cfg, d, fixedRoutes{})

	var deadAt time.Duration
	waitFor(t, "keepalives to all four and a timeout for the dead one", 10*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for _, p := range d.probes {
			if p.set == 4 && p.res.Timeout && deadAt == 0 {
				deadAt = time.Since(start)
			}
		}
		return gwA.options.Load() > 0 && gwB.options.Load() > 0 && obp.options.Load() > 0 && deadAt > 0
	})
	if src, via := sentFrom(t, gwA.lastOptions.Load()); src != p1 || via != p1 {
		t.Errorf("ping_socket: OPTIONS from port %s, Via port %s; want %s", src, via, p1)
	}
	if src, via := sentFrom(t, gwB.lastOptions.Load()); src != p2 || via != p2 {
		t.Errorf("ds_default_sockname: OPTIONS from port %s, Via port %s; want %s", src, via, p2)
	}
	if r := obp.lastOptions.Load(); r.Recipient.Host != "192.0.2.7" || r.Recipient.Port != 5070 || r.Route() != nil {
		t.Errorf("obproxy got %s with Route %v, want the destination's URI and no Route", r.Recipient.String(), r.Route())
	}
	if deadAt > 10*time.Second {
		t.Errorf("the dead destination's timeout came after %v: fr_timer (20s) was used, not ds_ping_fr_timer", deadAt)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("%q is not a port", s)
		}
		n = n*10 + int(c-'0')
	}
	return n
}

// TestDefaultSocketOtherTransport: ds_default_socket of another transport
// than a destination's stands for the listener of its transport on the same
// address (Kamailio's get_send_socket on a protocol mismatch), else the
// first listener of its transport.
func TestDefaultSocketOtherTransport(t *testing.T) {
	p := freeUDPPort(t)
	cfg := testConfig(ModeStateful)
	cfg.Listen = []string{"udp:127.0.0.1:0", "tcp:127.0.0.1:0", "udp:127.0.0.2:" + p, "tcp:127.0.0.2:0"}
	cfg.DefaultSocket = "udp:127.0.0.2:" + p
	s, err := NewServer(cfg, newFakeDispatcher(nil), fixedRoutes{}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.close) // close is idempotent
	tcp := dispatch.Destination{URI: "sip:192.0.2.1;transport=tcp", Host: "192.0.2.1", Transport: "tcp"}
	if k := s.destSocket(&tcp, "tcp", false); k != s.socks[3] {
		t.Errorf("tcp destination leaves from %v, want %s", k, s.socks[3].addr())
	}
	s.close() // frees the ports for the second server
	cfg.Listen = cfg.Listen[:3]
	s2, err := NewServer(cfg, newFakeDispatcher(nil), fixedRoutes{}, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s2.close)
	if k := s2.destSocket(&tcp, "tcp", false); k != nil {
		t.Errorf("no tcp listener on 127.0.0.2: got %s, want the first tcp listener (nil)", k.addr())
	}
	udp := dispatch.Destination{URI: "sip:192.0.2.1", Host: "192.0.2.1"}
	if k := s2.destSocket(&udp, "udp", false); k != s2.socks[2] {
		t.Errorf("udp destination leaves from %v, want the default socket", k)
	}
}
