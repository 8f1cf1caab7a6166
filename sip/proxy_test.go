package sip

import (
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// A whole call INVITE/180/200/ACK/BYE crosses the proxy in both modes, with
// our Record-Route in the 200 and the in-dialog requests reaching the gateway.
func TestCallThroughProxy(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(1))
			u := newUAC(t)
			ok, got := u.call(t, proxy)

			want := []int{180, 200}
			if mode == ModeStateful {
				want = []int{100, 180, 200}
			}
			if len(got) != len(want) {
				t.Fatalf("INVITE responses %v, want %v", got, want)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("INVITE responses %v, want %v", got, want)
				}
			}
			rr := ok.RecordRoute()
			if rr == nil || "127.0.0.1:"+itoa(rr.Address.Port) != proxy {
				t.Fatalf("200 Record-Route %v, want the proxy %s", rr, proxy)
			}
			if v := ok.Via(); v == nil || v.Host != "127.0.0.1" || len(ok.GetHeaders("Via")) != 1 {
				t.Fatalf("200 Via headers %v: the proxy's Via must be gone", ok.GetHeaders("Via"))
			}
			waitFor(t, "ACK at gateway", 10*time.Second, func() bool { return gw.acks.Load() == 1 })
			if n := gw.byes.Load(); n != 1 {
				t.Fatalf("gateway got %d BYEs, want 1", n)
			}
			inv := gw.lastInvite.Load()
			if mf := inv.MaxForwards(); mf == nil || mf.Val() != 69 {
				t.Fatalf("forwarded Max-Forwards %v, want 69", mf)
			}
			if n := len(inv.GetHeaders("Via")); n != 2 {
				t.Fatalf("forwarded INVITE has %d Via headers, want 2", n)
			}
		})
	}
}

// Many concurrent calls, bounded in number and time, all succeed.
func TestManyCalls(t *testing.T) {
	const calls, workers = 200, 10
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw1, gw2 := newGateway(t, "answer"), newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw1.dest(1), gw2.dest(1)}})
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(1))
			u := newUAC(t)
			jobs := make(chan int)
			errs := make(chan string, calls)
			done := make(chan struct{})
			for range workers {
				go func() {
					defer func() { done <- struct{}{} }()
					for range jobs {
						inv := u.request(sipmsg.INVITE, proxy, []byte("v=0\r\n"))
						tx, err := u.cli.TransactionRequest(t.Context(), inv)
						if err != nil {
							errs <- err.Error()
							continue
						}
						var final *sipmsg.Response
						timeout := time.After(10 * time.Second)
					wait:
						for {
							select {
							case r := <-tx.Responses():
								if !r.IsProvisional() {
									final = r
									break wait
								}
							case <-tx.Done():
								break wait
							case <-timeout:
								break wait
							}
						}
						tx.Terminate()
						if final == nil || final.StatusCode != 200 {
							errs <- "INVITE failed"
							continue
						}
						if err := u.cli.WriteRequest(inDialog(sipmsg.ACK, inv, final, inv.CSeq().SeqNo)); err != nil {
							errs <- err.Error()
							continue
						}
						res, err := u.cli.Do(t.Context(), inDialog(sipmsg.BYE, inv, final, inv.CSeq().SeqNo+1))
						if err != nil || res.StatusCode != 200 {
							errs <- "BYE failed"
						}
					}
				}()
			}
			start := time.Now()
			for i := range calls {
				jobs <- i
			}
			close(jobs)
			for range workers {
				<-done
			}
			close(errs)
			var failed []string
			for e := range errs {
				failed = append(failed, e)
			}
			if len(failed) > 0 {
				t.Fatalf("%d of %d calls failed: %v", len(failed), calls, failed[:min(5, len(failed))])
			}
			waitFor(t, "every BYE at a gateway", 10*time.Second, func() bool { return gw1.byes.Load()+gw2.byes.Load() == calls })
			if gw1.invites.Load() == 0 || gw2.invites.Load() == 0 {
				t.Fatalf("round robin used one gateway only: %d/%d", gw1.invites.Load(), gw2.invites.Load())
			}
			t.Logf("%s: %d calls in %s", mode, calls, time.Since(start))
		})
	}
}

// The gateway retransmits its 200 until the ACK comes; every copy reaches
// the caller (RFC 3261 §16.7 step 5), in both modes.
func Test2xxRetransmissionsForwarded(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "retransmit")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(1))
			u := newUAC(t)
			inv := u.request(sipmsg.INVITE, proxy, nil)
			rs := u.final(t, inv)
			ok := rs[len(rs)-1]
			count200 := func() int {
				n := 0
				for _, c := range u.wireCodes(inv.CallID().Value()) {
					if c == 200 {
						n++
					}
				}
				return n
			}
			waitFor(t, "three copies of the 200", 10*time.Second, func() bool { return count200() >= 3 })
			if err := u.cli.WriteRequest(inDialog(sipmsg.ACK, inv, ok, inv.CSeq().SeqNo)); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "ACK at gateway", 10*time.Second, func() bool { return gw.acks.Load() >= 1 })
		})
	}
}

// An initial request with a preloaded Route to the proxy (outbound proxy
// use) loses that Route on the way (RFC 3261 §16.4); a foreign Route below
// it stays.
func TestPreloadedRoutePopped(t *testing.T) {
	gw := newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateful), d, dispatchRoute(1))
	host, port, _ := sipmsg.ParseAddr(proxy)
	u := newUAC(t)
	inv := u.request(sipmsg.INVITE, proxy, nil)
	own := sipmsg.Uri{Scheme: "sip", Host: host, Port: port}
	own.UriParams.Add("lr", "")
	inv.AppendHeader(&sipmsg.RouteHeader{Address: own})
	inv.AppendHeader(&sipmsg.RouteHeader{Address: sipmsg.Uri{Scheme: "sip", Host: "next.example.net"}})
	if rs := u.final(t, inv); rs[len(rs)-1].StatusCode != 200 {
		t.Fatalf("INVITE answered %v", codes(rs))
	}
	routes := gw.lastInvite.Load().GetHeaders("Route")
	if len(routes) != 1 || !strings.Contains(routes[0].Value(), "next.example.net") {
		t.Fatalf("gateway got Route %v, want only the foreign one", routes)
	}
}

// The route's headers are added with their templates expanded per
// destination, and domain mode (ds_select_domain) rewrites the R-URI host.
func TestDispatchHeadersAndDomain(t *testing.T) {
	gw := newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{5: {gw.dest(5)}})
	tmpl := func(s string) *dispatch.Template {
		x, err := dispatch.ParseTemplate(s)
		if err != nil {
			t.Fatalf("ParseTemplate(%q): %v", s, err)
		}
		return x
	}
	rt := &Route{Name: "hdrs", Dispatch: &Dispatch{Set: 5, Alg: dispatch.AlgRoundRobin, Domain: true, Headers: []HeaderTemplate{
		{Name: "X-Dispatch-Set", Value: tmpl("$ds.set")},
		{Name: "X-Gw", Value: tmpl("$ds.uri/$rU")},
	}}}
	_, proxy := startProxy(t, testConfig(ModeStateful), d, fixedRoutes{rt})
	u := newUAC(t)
	if rs := u.final(t, u.request(sipmsg.INVITE, proxy, nil)); rs[len(rs)-1].StatusCode != 200 {
		t.Fatalf("INVITE answered %v", codes(rs))
	}
	inv := gw.lastInvite.Load()
	if h := inv.GetHeader("X-Dispatch-Set"); h == nil || h.Value() != "5" {
		t.Fatalf("X-Dispatch-Set %v, want 5", h)
	}
	if h := inv.GetHeader("X-Gw"); h == nil || h.Value() != gw.dest(5).URI+"/+15550100" {
		t.Fatalf("X-Gw %v, want %s/+15550100", h, gw.dest(5).URI)
	}
	if got := inv.Recipient; got.Host != "127.0.0.1" || got.Port != gw.port || got.User != "+15550100" {
		t.Fatalf("R-URI %s, want the gateway's host:port with the user kept", got.String())
	}
}

// Over UDP the stateful proxy's own transactions (sip/txn) absorb a
// retransmitted INVITE: the caller gets the last provisional reply again and
// the gateway sees one INVITE.
func TestStatefulRetransmittedInviteAbsorbed(t *testing.T) {
	gw := newGateway(t, "ring")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
	_, proxy := startProxy(t, testConfig(ModeStateful), d, dispatchRoute(1))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to, _ := net.ResolveUDPAddr("udp", proxy)
	inv := benchInvite(nil, 1, pc.LocalAddr().String())
	buf := make([]byte, 65535)
	// next returns the status code of the next response to the caller.
	next := func() int {
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("no response: %v", err)
		}
		m, err := sipmsg.ParseMessage(slices.Clone(buf[:n]))
		if err != nil {
			t.Fatal(err)
		}
		return m.(*sipmsg.Response).StatusCode
	}
	pc.WriteTo(inv, to)
	for next() != 180 {
	}
	pc.WriteTo(inv, to)
	if c := next(); c != 180 {
		t.Fatalf("the retransmission got %d, want the 180 again", c)
	}
	if n := gw.invites.Load(); n != 1 {
		t.Fatalf("the gateway got %d INVITEs, want 1", n)
	}
}
