package sip

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/sipenc"
)

// The benchmarks of this file follow one INVITE through the proxy's hot
// pieces (docs/benchmarks.md, "SIP path"): parse, route, select, build and
// serialise the forwarded request; then whole requests and responses
// through the stateless fast path with a transport that discards what it is
// given; and the memory a stateful proxy holds per finished call.

// benchInvite is an INVITE as the SIPp harness's UAC sends it (with SDP),
// with branch and Call-ID made from n so that every one is a new call.
func benchInvite(buf []byte, n int, from string) []byte {
	id := strconv.Itoa(n)
	body := "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" +
		"m=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
	buf = append(buf[:0], "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP "+from+";branch=z9hG4bK-bench-"...)
	buf = append(buf, id...)
	buf = append(buf, "\r\nFrom: sipp <sip:sipp@"+from+">;tag=1SIPpTag00"...)
	buf = append(buf, id...)
	buf = append(buf, "\r\nTo: service <sip:service@127.0.0.1:5060>\r\nCall-ID: "...)
	buf = append(buf, id...)
	buf = append(buf, "-bench@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@"+from+"\r\n"+
		"Max-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\n"+
		"Content-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body...)
	return buf
}

// benchRinging is the gateway's 180 to benchInvite n as it reaches the
// proxy: our Via on top of the caller's.
func benchRinging(buf []byte, n int, proxy, from string) []byte {
	id := strconv.Itoa(n)
	buf = append(buf[:0], "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP "+proxy+";branch=z9hG4bKsd"...)
	buf = append(buf, id...)
	buf = append(buf, "\r\nVia: SIP/2.0/UDP "+from+";branch=z9hG4bK-bench-"...)
	buf = append(buf, id...)
	buf = append(buf, "\r\nRecord-Route: <sip:"+proxy+";transport=udp;lr>\r\nFrom: sipp <sip:sipp@"+from+">;tag=1SIPpTag00"...)
	buf = append(buf, id...)
	buf = append(buf, "\r\nTo: service <sip:service@127.0.0.1:5060>;tag=gw1\r\nCall-ID: "...)
	buf = append(buf, id...)
	buf = append(buf, "-bench@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.1:5081>\r\nContent-Length: 0\r\n\r\n"...)
	return buf
}

// discardConn is the fake transport: writes succeed and go nowhere.
type discardConn struct {
	net.PacketConn
	writes atomic.Int64
}

func (c *discardConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.writes.Add(1)
	return len(b), nil
}

func (c *discardConn) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) {
	c.writes.Add(1)
	return len(b), nil
}

// benchStateless is a stateless proxy whose UDP listener writes into a
// discardConn; nothing reads its socket, the benchmark calls the read
// loop's hook (statelessRead) itself.
func benchStateless(b *testing.B, d Dispatcher) (*statelessForwarder, *discardConn, sipmsg.TransportReadProps) {
	b.Helper()
	cfg := testConfig(ModeStateless)
	cfg.UDPReaders = 1
	s, err := NewServer(cfg, d, dispatchRoute(1), testLogger())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.close() })
	k := s.socketFor("udp")
	dc := &discardConn{PacketConn: k.pc}
	k.w.PacketConn = dc
	src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 5070}
	return s.fw.(*statelessForwarder), dc, sipmsg.TransportReadProps{Transport: "UDP", LocalAddr: k.pc.LocalAddr(), RemoteAddr: src}
}

func benchGateways() map[int][]dispatch.Destination {
	var ds []dispatch.Destination
	for i := 1; i <= 3; i++ {
		port := 5080 + i
		ds = append(ds, dispatch.Destination{SetID: 1, URI: "sip:127.0.0.1:" + strconv.Itoa(port), Scheme: "sip", Host: "127.0.0.1", Port: port})
	}
	return map[int][]dispatch.Destination{1: ds}
}

// BenchmarkInvite is one INVITE's steps, each on its own.
func BenchmarkInvite(b *testing.B) {
	data := benchInvite(nil, 1, "127.0.0.1:5070")
	parser := sipmsg.NewParser()
	parse := func(b *testing.B) *sipmsg.Request {
		msg, err := parser.ParseSIP(data)
		if err != nil {
			b.Fatal(err)
		}
		req := msg.(*sipmsg.Request)
		req.SetSource("127.0.0.1:5070")
		req.SetTransport("UDP")
		return req
	}
	routes, err := NewRouter([]RouteConfig{{Name: "all", Dispatch: &DispatchConfig{Set: 1, Alg: int(dispatch.AlgRoundRobin)}}}, 1)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			parse(b)
		}
	})
	b.Run("route", func(b *testing.B) {
		req := parse(b)
		b.ReportAllocs()
		for b.Loop() {
			if code, _ := validate(req); code != 0 {
				b.Fatal(code)
			}
			dr := RequestFrom(req, req.Source(), req.Transport())
			if routes.Match(&dr, nil) == nil {
				b.Fatal("no route")
			}
		}
	})
	b.Run("select", func(b *testing.B) {
		cfg := dispatch.DefaultConfig()
		cfg.Flags = 2
		reg, err := actors.NewRegistry(&cfg, []dispatch.Set{{ID: 1, Dests: benchGateways()[1]}}, actors.Options{Seed: 1, Logger: testLogger()})
		if err != nil {
			b.Fatal(err)
		}
		defer reg.Stop()
		req := parse(b)
		dr := RequestFrom(req, req.Source(), req.Transport())
		b.ReportAllocs()
		for b.Loop() {
			if _, err := reg.Select(context.Background(), 1, dispatch.AlgRoundRobin, &dr, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
	fw, _, _ := benchStateless(b, newFakeDispatcher(benchGateways()))
	rt := routes.Routes()[0]
	req := parse(b)
	dr := RequestFrom(req, req.Source(), req.Transport())
	sel := actors.Selection{SetID: 1, Dests: benchGateways()[1]}
	h, err := fw.destHop(&sel.Dests[0])
	if err != nil {
		b.Fatal(err)
	}
	b.Run("build", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			fw.dispatchOutgoing(req, fw.socketFor("udp").tx, &dr, rt.Dispatch, &sel, &sel.Dests[0], h, 69, statelessBranch(req))
		}
	})
	b.Run("serialise", func(b *testing.B) {
		fwd := fw.dispatchOutgoing(req, fw.socketFor("udp").tx, &dr, rt.Dispatch, &sel, &sel.Dests[0], h, 69, statelessBranch(req))
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			buf = sipenc.Append(buf[:0], fwd)
		}
		b.ReportMetric(float64(len(buf)), "bytes")
	})
}

// BenchmarkStatelessForward is the stateless fast path (statelessRead) for a
// new INVITE, and for a 180 relayed back, from the bytes read to the bytes
// written, with the fake transport.
func BenchmarkStatelessForward(b *testing.B) {
	b.Run("invite", func(b *testing.B) {
		fw, dc, props := benchStateless(b, newFakeDispatcher(benchGateways()))
		var buf []byte
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			n++
			buf = benchInvite(buf, n, "127.0.0.1:5070")
			if rest, _ := fw.statelessRead(props, buf, nil); rest != nil {
				b.Fatal("not handled")
			}
		}
		if dc.writes.Load() != int64(n) {
			b.Fatalf("%d writes for %d INVITEs", dc.writes.Load(), n)
		}
	})
	b.Run("response", func(b *testing.B) {
		fw, dc, props := benchStateless(b, newFakeDispatcher(benchGateways()))
		proxy := fw.Addrs()[0][len("udp:"):]
		var buf []byte
		n := 0
		b.ReportAllocs()
		for b.Loop() {
			n++
			buf = benchRinging(buf, n, proxy, "127.0.0.1:5070")
			if rest, _ := fw.statelessRead(props, buf, nil); rest != nil {
				b.Fatal("not handled")
			}
		}
		if dc.writes.Load() != int64(n) {
			b.Fatalf("%d writes for %d responses", dc.writes.Load(), n)
		}
	})
}

// rawGateway answers over a bare UDP socket, without transactions (so that
// it holds nothing): 180 and 200 to an INVITE, 200 to a BYE.
func rawGateway(b *testing.B) (addr *net.UDPAddr, acks *atomic.Int64) {
	b.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pc.Close() })
	addr = pc.LocalAddr().(*net.UDPAddr)
	contact := &sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: "gw", Host: "127.0.0.1", Port: addr.Port}}
	acks = new(atomic.Int64)
	go func() {
		parser := sipmsg.NewParser()
		buf := make([]byte, 65535)
		var out bytes.Buffer
		send := func(req *sipmsg.Request, code int, reason string, to net.Addr) {
			res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
			if code > 100 {
				res.To().Params.Add("tag", "gw1")
				res.AppendHeader(contact)
			}
			out.Reset()
			res.StringWrite(&out)
			pc.WriteTo(out.Bytes(), to)
		}
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			msg, err := parser.ParseSIP(buf[:n])
			if err != nil {
				continue
			}
			req, ok := msg.(*sipmsg.Request)
			if !ok {
				continue
			}
			switch req.Method {
			case sipmsg.INVITE:
				send(req, 180, "Ringing", from)
				send(req, 200, "OK", from)
			case sipmsg.ACK:
				acks.Add(1)
			default:
				send(req, 200, "OK", from)
			}
		}
	}()
	return addr, acks
}

// BenchmarkStatefulCallHeld places whole calls (INVITE, 180, 200, ACK, BYE,
// 200) one after the other through a stateful proxy, from a bare UDP caller
// to a bare UDP gateway, and reports the heap the proxy still holds per
// finished call once they are done: what its finished transactions keep
// for the RFC 3261 timers. sipgo's default timers apply (T1 500 ms), so no
// transaction of the run expires before it is measured. held-B/tx divides
// by the four transactions of a call at the proxy (INVITE and BYE, each a
// server and a client transaction).
func BenchmarkStatefulCallHeld(b *testing.B) {
	sipmsg.SetTimers(500*time.Millisecond, 4*time.Second, 5*time.Second)
	defer sipmsg.SetTimers(100*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond) // TestMain's
	gw, acks := rawGateway(b)
	gwDest := dispatch.Destination{SetID: 1, URI: "sip:" + gw.String(), Scheme: "sip", Host: "127.0.0.1", Port: gw.Port}
	cfg := testConfig(ModeStateful)
	_, proxy := startProxy(b, cfg, newFakeDispatcher(map[int][]dispatch.Destination{1: {gwDest}}), dispatchRoute(1))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	to, _ := net.ResolveUDPAddr("udp", proxy)
	me := pc.LocalAddr().String()
	parser := sipmsg.NewParser()
	rbuf := make([]byte, 65535)
	var wbuf []byte
	// await reads responses until a final one for method.
	await := func(method string) *sipmsg.Response {
		for {
			pc.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, _, err := pc.ReadFrom(rbuf)
			if err != nil {
				b.Fatalf("waiting for the %s's final response: %v", method, err)
			}
			msg, err := parser.ParseSIP(rbuf[:n])
			if err != nil {
				b.Fatal(err)
			}
			if res, ok := msg.(*sipmsg.Response); ok && res.StatusCode >= 200 && string(res.CSeq().MethodName) == method {
				return res
			}
		}
	}
	inDialog := func(method string, n int, ok *sipmsg.Response, seq int) []byte {
		id := strconv.Itoa(n)
		rr := ok.GetHeader("Record-Route")
		if rr == nil {
			b.Fatal("200 without Record-Route")
		}
		return []byte(method + " sip:gw@" + gw.String() + " SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + me + ";branch=z9hG4bK-" + strings.ToLower(method) + "-" + id + "\r\n" +
			"Route: " + rr.Value() + "\r\n" +
			"From: sipp <sip:sipp@" + me + ">;tag=1SIPpTag00" + id + "\r\n" +
			"To: " + ok.To().Value() + "\r\nCall-ID: " + id + "-bench@127.0.0.1\r\n" +
			"CSeq: " + strconv.Itoa(seq) + " " + method + "\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	}
	call := func(n int) {
		wbuf = benchInvite(wbuf, n, me)
		pc.WriteTo(wbuf, to)
		ok := await("INVITE")
		if ok.StatusCode != 200 {
			b.Fatalf("INVITE answered %d", ok.StatusCode)
		}
		pc.WriteTo(inDialog("ACK", n, ok, 1), to)
		pc.WriteTo(inDialog("BYE", n, ok, 2), to)
		if res := await("BYE"); res.StatusCode != 200 {
			b.Fatalf("BYE answered %d", res.StatusCode)
		}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	call(0) // warm up: pools, maps
	for acks.Load() < 1 {
		time.Sleep(time.Millisecond)
	}
	before := heap()
	n := 0
	for b.Loop() {
		n++
		call(n)
	}
	for deadline := time.Now().Add(10 * time.Second); acks.Load() < int64(n+1) && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	held := float64(int64(heap())-int64(before)) / float64(n)
	b.ReportMetric(held, "held-B/call")
	b.ReportMetric(held/4, "held-B/tx")
}
