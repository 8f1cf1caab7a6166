package sip

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// TestMain shortens sipgo's transaction timers (process globals) so that
// retransmission and timeout paths finish quickly. T1 100ms makes Timers B
// and F 6.4s: sipgo applies Timer B even after a provisional reply, so a
// shorter one fails calls on a loaded machine.
func TestMain(m *testing.M) {
	sipmsg.SetTimers(100*time.Millisecond, 400*time.Millisecond, 500*time.Millisecond)
	sipmsg.SIPDebug = os.Getenv("SIP_TEST_DUMP") != ""
	os.Exit(m.Run())
}

func testLogger() *slog.Logger {
	if os.Getenv("SIP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// fakeDispatcher serves fixed sets round-robin and records what the proxy
// asked of it.
type fakeDispatcher struct {
	loadAdded bool // report Selection.LoadAdded, as alg 10 does for an INVITE

	mu       sync.Mutex
	sets     map[int][]dispatch.Destination
	rr       map[int]int
	marks    []string // "set uri op"
	confirms []string // "set callid"
	removes  []string // "set callid"
	moves    []string // "set callid uri"
	probes   []probeReport
	targets  []actors.ProbeTarget
}

type probeReport struct {
	set int
	uri string
	res dispatch.ProbeResult
}

func newFakeDispatcher(sets map[int][]dispatch.Destination) *fakeDispatcher {
	return &fakeDispatcher{sets: sets, rr: map[int]int{}}
}

func (f *fakeDispatcher) Select(ctx context.Context, setID int, alg dispatch.Algorithm, req *dispatch.Request, limit int) (actors.Selection, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	dests, ok := f.sets[setID]
	if !ok {
		return actors.Selection{}, dispatch.ErrUnknownSet
	}
	if len(dests) == 0 {
		return actors.Selection{}, dispatch.ErrNoDestination
	}
	start := f.rr[setID] % len(dests)
	f.rr[setID]++
	sel := actors.Selection{SetID: setID, Alg: alg, LoadAdded: f.loadAdded && req.Method == "INVITE",
		Parallel: alg == dispatch.AlgParallel}
	for i := range dests {
		sel.Dests = append(sel.Dests, dests[(start+i)%len(dests)])
	}
	if limit > 0 && len(sel.Dests) > limit {
		sel.Dests = sel.Dests[:limit]
	}
	return sel, nil
}

func (f *fakeDispatcher) Mark(ctx context.Context, setID int, uri string, op dispatch.MarkOp) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.marks = append(f.marks, fmt.Sprintf("%d %s %+v", setID, uri, op))
	return nil
}

func (f *fakeDispatcher) LoadConfirm(setID int, callID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.confirms = append(f.confirms, fmt.Sprintf("%d %s", setID, callID))
}

func (f *fakeDispatcher) LoadMove(setID int, callID, uri string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.moves = append(f.moves, fmt.Sprintf("%d %s %s", setID, callID, uri))
}

func (f *fakeDispatcher) LoadRemove(setID int, callID string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removes = append(f.removes, fmt.Sprintf("%d %s", setID, callID))
}

func (f *fakeDispatcher) ReportProbe(setID int, uri string, res dispatch.ProbeResult) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.probes = append(f.probes, probeReport{setID, uri, res})
}

func (f *fakeDispatcher) ProbeTargets(ctx context.Context) ([]actors.ProbeTarget, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.targets), nil
}

func (f *fakeDispatcher) FromSet(setID int, ip string, port int, proto string) bool { return false }

// snapshot returns a copy of a recorded list under the lock.
func (f *fakeDispatcher) snapshot(l *[]string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(*l)
}

// fixedRoutes answers every request with one route (nil = 404).
type fixedRoutes struct{ r *Route }

func (f fixedRoutes) Match(req *dispatch.Request, fromSet func(int, int) bool) *Route { return f.r }

func (f fixedRoutes) Next(*Route, *dispatch.Request, func(int, int) bool) *Route { return nil }

func dispatchRoute(set int) fixedRoutes {
	return fixedRoutes{&Route{Name: "test", Dispatch: &Dispatch{Set: set, Alg: dispatch.AlgRoundRobin}}}
}

// testConfig is a proxy on a free UDP port of 127.0.0.1 with short timers.
func testConfig(mode string) Config {
	c := DefaultConfig()
	c.Listen = []string{"udp:127.0.0.1:0"}
	c.Mode = mode
	c.FRTimer = 5 * time.Second
	c.FRInvTimer = 10 * time.Second
	return c
}

// startProxy runs a Server until the test ends and returns its UDP address.
func startProxy(t testing.TB, cfg Config, d Dispatcher, r Routes) (*Server, string) {
	t.Helper()
	s, err := NewServer(cfg, d, r, testLogger())
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		if err := s.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	addr := s.Addrs()[0]
	return s, addr[len("udp:"):]
}

// gateway is a sipgo UAS standing for a PSTN gateway. Its mode says how it
// answers an INVITE: "answer" (180 then 200), "retransmit" (180, then the
// 200 three times), "503", "silent" (nothing), or "ring" (180, then wait for
// the CANCEL).
type gateway struct {
	addr string
	ip   string
	port int
	mode string

	invites, acks, byes, cancels, options atomic.Int32
	lastInvite, lastOptions               atomic.Pointer[sipmsg.Request]
}

func (g *gateway) lastOptionsFrom() string {
	if r := g.lastOptions.Load(); r != nil {
		return r.From().Address.String()
	}
	return ""
}

func newGateway(t *testing.T, mode string) *gateway {
	t.Helper()
	return newGatewayOn(t, mode, "127.0.0.1")
}

// newGatewayOn is a gateway on a free UDP port of ip.
func newGatewayOn(t *testing.T, mode, ip string) *gateway {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	g := &gateway{addr: pc.LocalAddr().String(), ip: ip, port: pc.LocalAddr().(*net.UDPAddr).Port, mode: mode}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("gw"),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(testLogger())),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(testLogger())))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	srv.OnInvite(g.onInvite)
	srv.OnAck(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) { g.acks.Add(1) })
	srv.OnBye(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		g.byes.Add(1)
		tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	})
	srv.OnNoRoute(func(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
		if req.Method == sipmsg.OPTIONS {
			g.options.Add(1)
			g.lastOptions.Store(req)
		}
		tx.Respond(sipmsg.NewResponseFromRequest(req, 200, "OK", nil))
	})
	go srv.ServeUDP(pc)
	t.Cleanup(func() { ua.Close(); pc.Close() })
	return g
}

// dest is the gateway as a destination of set.
func (g *gateway) dest(set int) dispatch.Destination {
	return dispatch.Destination{SetID: set, URI: "sip:" + g.addr, Scheme: "sip", Host: g.ip, Port: g.port}
}

func (g *gateway) onInvite(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	g.invites.Add(1)
	g.lastInvite.Store(req)
	tag := sipmsg.GenerateTagN(8)
	respond := func(code int, reason string) {
		res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
		res.To().Params.Add("tag", tag)
		if code >= 180 && code < 300 {
			res.AppendHeader(&sipmsg.ContactHeader{Address: sipmsg.Uri{Scheme: "sip", User: "gw", Host: g.ip, Port: g.port}})
		}
		tx.Respond(res)
	}
	switch g.mode {
	case "silent":
	case "503":
		respond(503, "Service Unavailable")
	case "ring":
		cancelled := make(chan struct{})
		if tx.OnCancel(func(*sipmsg.Request) { g.cancels.Add(1); close(cancelled) }) {
			respond(180, "Ringing")
			select {
			case <-cancelled:
			case <-time.After(10 * time.Second):
			}
		}
	case "retransmit":
		// A UAS core retransmits its 2xx until the ACK (RFC 3261 §13.3.1.4).
		respond(180, "Ringing")
		for range 3 {
			respond(200, "OK")
			time.Sleep(20 * time.Millisecond)
		}
	default:
		if code, err := strconv.Atoi(g.mode); err == nil {
			respond(code, "Test")
			return
		}
		respond(180, "Ringing")
		respond(200, "OK")
	}
}

// uac is a sipgo UAC that places calls through the proxy. wire records the
// status codes of the responses it reads, per Call-ID, in the order they came
// off the socket (sipgo's transactions may reorder them).
type uac struct {
	ua  *sipgo.UserAgent
	cli *sipgo.Client

	mu   sync.Mutex
	wire map[string][]int
}

func (u *uac) onWire(m sipmsg.Message) {
	if res, ok := m.(*sipmsg.Response); ok && res.CallID() != nil {
		u.mu.Lock()
		u.wire[res.CallID().Value()] = append(u.wire[res.CallID().Value()], res.StatusCode)
		u.mu.Unlock()
	}
}

func (u *uac) wireCodes(callID string) []int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.wire[callID])
}

func newUAC(t *testing.T) *uac {
	t.Helper()
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("uac"),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(testLogger())),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(testLogger()),
			// A 180 that its transaction saw after the 200 is expected here.
			sipmsg.WithTransactionLayerUnhandledResponseHandler(func(*sipmsg.Response) {})))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"), sipgo.WithClientLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	u := &uac{ua: ua, cli: cli, wire: map[string][]int{}}
	ua.TransportLayer().OnMessage(u.onWire)
	return u
}

// request builds a request for the proxy at addr with an R-URI it does not own.
func (u *uac) request(method sipmsg.RequestMethod, proxy string, body []byte) *sipmsg.Request {
	req := sipmsg.NewRequest(method, sipmsg.Uri{Scheme: "sip", User: "+15550100", Host: "pstn.example.net"})
	req.SetDestination(proxy)
	req.SetTransport("UDP")
	if body != nil {
		req.AppendHeader(sipmsg.NewHeader("Content-Type", "application/sdp"))
		req.SetBody(body)
	}
	return req
}

// final sends req in a transaction and collects every response up to the final one.
func (u *uac) final(t *testing.T, req *sipmsg.Request) []*sipmsg.Response {
	t.Helper()
	tx, err := u.cli.TransactionRequest(context.Background(), req)
	if err != nil {
		t.Fatalf("send %s: %v", req.Method, err)
	}
	defer tx.Terminate()
	return collect(t, tx, 10*time.Second)
}

func collect(t *testing.T, tx sipmsg.ClientTransaction, within time.Duration) []*sipmsg.Response {
	t.Helper()
	var got []*sipmsg.Response
	deadline := time.After(within)
	for {
		select {
		case res := <-tx.Responses():
			got = append(got, res)
			if !res.IsProvisional() {
				return got
			}
		case <-tx.Done():
			t.Fatalf("transaction ended without a final reply: %v (got %v)", tx.Err(), codes(got))
		case <-deadline:
			t.Fatalf("no final reply within %s (got %v)", within, codes(got))
		}
	}
}

func codes(rs []*sipmsg.Response) []int {
	var out []int
	for _, r := range rs {
		out = append(out, r.StatusCode)
	}
	return out
}

// inDialog builds an ACK or BYE for the dialog the 2xx res established:
// R-URI the remote target, Route the Record-Route set reversed (RFC 3261 §12.1.2).
func inDialog(method sipmsg.RequestMethod, inv *sipmsg.Request, res *sipmsg.Response, seq uint32) *sipmsg.Request {
	req := sipmsg.NewRequest(method, res.Contact().Address)
	rrs := res.GetHeaders("Record-Route")
	for i := len(rrs) - 1; i >= 0; i-- {
		req.AppendHeader(&sipmsg.RouteHeader{Address: rrs[i].(*sipmsg.RecordRouteHeader).Address})
	}
	req.AppendHeader(sipmsg.HeaderClone(inv.From()))
	req.AppendHeader(sipmsg.HeaderClone(res.To()))
	req.AppendHeader(sipmsg.HeaderClone(inv.CallID()))
	req.AppendHeader(&sipmsg.CSeqHeader{SeqNo: seq, MethodName: method})
	mf := sipmsg.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	req.SetTransport("UDP")
	req.SetBody(nil)
	return req
}

// call places INVITE/ACK/BYE through the proxy and returns the 200 and the
// status codes of the INVITE's responses in wire order; it fails the test on
// any error.
func (u *uac) call(t *testing.T, proxy string) (*sipmsg.Response, []int) {
	t.Helper()
	inv := u.request(sipmsg.INVITE, proxy, []byte("v=0\r\n"))
	rs := u.final(t, inv)
	last := rs[len(rs)-1]
	if last.StatusCode != 200 {
		t.Fatalf("INVITE answered %v, want 200", codes(rs))
	}
	if err := u.cli.WriteRequest(inDialog(sipmsg.ACK, inv, last, inv.CSeq().SeqNo)); err != nil {
		t.Fatalf("ACK: %v", err)
	}
	bye := u.final(t, inDialog(sipmsg.BYE, inv, last, inv.CSeq().SeqNo+1))
	if c := bye[len(bye)-1].StatusCode; c != 200 {
		t.Fatalf("BYE answered %d, want 200", c)
	}
	var invCodes []int
	for _, c := range u.wireCodes(inv.CallID().Value()) {
		if len(invCodes) > 0 && invCodes[len(invCodes)-1] == 200 {
			break // the BYE's 200 follows
		}
		invCodes = append(invCodes, c)
	}
	return last, invCodes
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// cancelFor builds the CANCEL a caller sends for inv (RFC 3261 §9.1: same
// R-URI, top Via, From, To, Call-ID and CSeq number) to the proxy over UDP.
func cancelFor(inv *sipmsg.Request, proxy string) *sipmsg.Request {
	c := sipmsg.NewRequest(sipmsg.CANCEL, inv.Recipient)
	c.AppendHeader(sipmsg.HeaderClone(inv.Via()))
	c.AppendHeader(sipmsg.HeaderClone(inv.From()))
	c.AppendHeader(sipmsg.HeaderClone(inv.To()))
	c.AppendHeader(sipmsg.HeaderClone(inv.CallID()))
	c.AppendHeader(&sipmsg.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sipmsg.CANCEL})
	c.SetDestination(proxy)
	c.SetTransport("UDP")
	return c
}

// ringing sends an INVITE from u through proxy and waits for its 180, for
// tests that then CANCEL it; the transaction ends with the test.
func ringing(t *testing.T, u *uac, proxy string) (*sipmsg.Request, sipmsg.ClientTransaction, string) {
	t.Helper()
	inv := u.request(sipmsg.INVITE, proxy, nil)
	tx, err := u.cli.TransactionRequest(context.Background(), inv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tx.Terminate)
	callID := inv.CallID().Value()
	waitFor(t, "180 at the caller", 10*time.Second, func() bool { return slices.Contains(u.wireCodes(callID), 180) })
	return inv, tx, callID
}
