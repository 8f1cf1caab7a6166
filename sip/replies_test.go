package sip

import (
	"bytes"
	"encoding/hex"
	"hash/fnv"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/sipenc"
)

// Requests the proxy answers itself (docs/proxy.md, "How the proxy handles a
// request", steps 3, 4, 6 and 7).
func TestLocalReplies(t *testing.T) {
	gw := newGateway(t, "answer")
	sets := map[int][]dispatch.Destination{1: {gw.dest(1)}, 2: {}}
	tests := []struct {
		name       string
		routes     Routes
		mode       string
		build      func(u *uac, proxy string) *sipmsg.Request
		code       int
		retryAfter bool
	}{
		{name: "max-forwards 0", routes: dispatchRoute(1), code: 483, build: func(u *uac, p string) *sipmsg.Request {
			r := u.request(sipmsg.INVITE, p, nil)
			mf := sipmsg.MaxForwardsHeader(0)
			r.AppendHeader(&mf)
			return r
		}},
		{name: "no route", routes: fixedRoutes{}, code: 404},
		{name: "unknown set", routes: dispatchRoute(7), code: 503, retryAfter: true},
		{name: "no destination", routes: dispatchRoute(2), code: 503, retryAfter: true},
		{name: "no destination stateless", routes: dispatchRoute(2), mode: ModeStateless, code: 503, retryAfter: true},
		{name: "reply route", routes: fixedRoutes{&Route{Name: "busy", Reply: &ReplyConfig{Code: 486}}}, code: 486},
		{name: "options to the proxy", routes: fixedRoutes{}, code: 200, build: func(u *uac, p string) *sipmsg.Request {
			host, port, _ := sipmsg.ParseAddr(p)
			r := sipmsg.NewRequest(sipmsg.OPTIONS, sipmsg.Uri{Scheme: "sip", Host: host, Port: port})
			r.SetDestination(p)
			r.SetTransport("UDP")
			return r
		}},
		{name: "bye outside any dialog we know", routes: dispatchRoute(1), code: 404, build: func(u *uac, p string) *sipmsg.Request {
			host, port, _ := sipmsg.ParseAddr(p)
			r := sipmsg.NewRequest(sipmsg.BYE, sipmsg.Uri{Scheme: "sip", User: "x", Host: host, Port: port})
			r.AppendHeader(&sipmsg.ToHeader{Address: sipmsg.Uri{Scheme: "sip", Host: "example.net"}, Params: sipmsg.HeaderParams{{K: "tag", V: "abc"}}})
			r.SetDestination(p)
			r.SetTransport("UDP")
			return r
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mode := tc.mode
			if mode == "" {
				mode = ModeStateful
			}
			d := newFakeDispatcher(sets)
			_, proxy := startProxy(t, testConfig(mode), d, tc.routes)
			u := newUAC(t)
			req := u.request(sipmsg.INVITE, proxy, nil)
			if tc.build != nil {
				req = tc.build(u, proxy)
			}
			rs := u.final(t, req)
			res := rs[len(rs)-1]
			if res.StatusCode != tc.code {
				t.Fatalf("answered %d %s, want %d", res.StatusCode, res.Reason, tc.code)
			}
			if h := res.GetHeader("Retry-After"); (h != nil) != tc.retryAfter {
				t.Fatalf("Retry-After %v, want present=%v", h, tc.retryAfter)
			}
			if n := gw.invites.Load(); n != 0 && tc.code != 200 {
				t.Fatalf("gateway got %d INVITEs for a locally answered request", n)
			}
		})
	}
}

// An INVITE with a 3 KB SDP goes out over UDP intact (sipgo's default limit
// is 1300 bytes).
func TestLargeInviteOverUDP(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(1))
			u := newUAC(t)
			sdp := []byte("v=0\r\n" + strings.Repeat("a=x-padding:0123456789abcdef0123456789abcdef\r\n", 70))
			if len(sdp) < 3000 {
				t.Fatalf("SDP only %d bytes", len(sdp))
			}
			rs := u.final(t, u.request(sipmsg.INVITE, proxy, sdp))
			if c := rs[len(rs)-1].StatusCode; c != 200 {
				t.Fatalf("large INVITE answered %d", c)
			}
			if got := gw.lastInvite.Load().Body(); !bytes.Equal(got, sdp) {
				t.Fatalf("gateway got a %d-byte body, want the %d-byte SDP", len(got), len(sdp))
			}
		})
	}
}

// Algorithm-10 call load: the 2xx confirms the entry, our Record-Route
// carries the set, and the BYE removes the entry from that set.
func TestCallLoadTracking(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{3: {gw.dest(3)}})
			d.loadAdded = true
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(3))
			u := newUAC(t)
			ok, _ := u.call(t, proxy)
			callID := ok.CallID().Value()
			if ds, _ := ok.RecordRoute().Address.UriParams.Get("ds"); ds != "3" {
				t.Fatalf("Record-Route %s: want ;ds=3", ok.RecordRoute().Value())
			}
			want := []string{"3 " + callID}
			waitFor(t, "LoadConfirm", 10*time.Second, func() bool { return slices.Equal(d.snapshot(&d.confirms), want) })
			waitFor(t, "LoadRemove by the BYE", 10*time.Second, func() bool { return slices.Equal(d.snapshot(&d.removes), want) })
		})
	}
}

// A failed alg-10 INVITE removes its load entry.
func TestCallLoadRemovedOnFailure(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "503")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
			d.loadAdded = true
			_, proxy := startProxy(t, testConfig(mode), d, dispatchRoute(1))
			u := newUAC(t)
			inv := u.request(sipmsg.INVITE, proxy, nil)
			rs := u.final(t, inv)
			want := 503 // relayed as is by the stateless proxy
			if mode == ModeStateful {
				want = 500 // RFC 3261 §16.7 step 6
			}
			if c := rs[len(rs)-1].StatusCode; c != want {
				t.Fatalf("final %d, want %d", c, want)
			}
			waitFor(t, "LoadRemove", 10*time.Second, func() bool {
				return slices.Equal(d.snapshot(&d.removes), []string{"1 " + inv.CallID().Value()})
			})
		})
	}
}

// The stateful proxy's 100 Trying over its own transactions (tryingFor) is
// sipgo's NewResponseFromRequest byte for byte, for the RFC 4475 INVITEs and
// for a caller asking for rport, with Timestamp copied; and it leaves the
// request as it was.
func TestTryingIsSipgos(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(tortureDir, "*.dat"))
	if err != nil {
		t.Fatal(err)
	}
	var raws [][]byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		raws = append(raws, b)
	}
	raws = append(raws, []byte("INVITE sip:bob@example.com SIP/2.0\r\n"+
		"Via: SIP/2.0/UDP 10.0.0.1:5070;rport;branch=z9hG4bK-r\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-s\r\n"+
		"From: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: r@h\r\nCSeq: 1 INVITE\r\n"+
		"timestamp: 54\r\nRecord-Route: <sip:p.example.com;lr>\r\nContent-Length: 0\r\n\r\n"))
	n := 0
	for _, raw := range raws {
		m, err := sipmsg.ParseMessage(raw)
		req, ok := m.(*sipmsg.Request)
		if err != nil || !ok || !req.IsInvite() {
			continue
		}
		n++
		req.SetSource("192.0.2.7:6000")
		req.SetTransport("UDP")
		before := sipenc.Append(nil, req)
		want := sipmsg.NewResponseFromRequest(req, 100, "Trying", nil)
		got := tryingFor(req)
		if g, w := sipenc.Append(nil, got), sipenc.Append(nil, want); !bytes.Equal(g, w) {
			t.Errorf("%s:\n got %q\nwant %q", req.CallID().Value(), g, w)
		}
		if got.Destination() != want.Destination() || got.Transport() != want.Transport() {
			t.Errorf("%s: to %s over %s, sipgo %s over %s", req.CallID().Value(), got.Destination(), got.Transport(), want.Destination(), want.Transport())
		}
		if after := sipenc.Append(nil, req); !bytes.Equal(before, after) {
			t.Errorf("%s: request changed:\n%q\n%q", req.CallID().Value(), before, after)
		}
	}
	if n < 5 {
		t.Fatalf("only %d INVITEs", n)
	}
}

// statelessBranch is the hash it always was (hash/fnv over the branch and
// sent-by, or RFC 2543's fields), so that a retransmission, CANCEL or ACK
// read by another build of the proxy maps to the same branch.
func TestStatelessBranchStable(t *testing.T) {
	reference := func(req *sipmsg.Request) string {
		h := fnv.New64a()
		via := req.Via()
		if b, _ := via.Params.Get("branch"); len(b) > len("z9hG4bK") && strings.HasPrefix(b, "z9hG4bK") {
			h.Write([]byte(b))
			h.Write([]byte(via.SentBy()))
		} else {
			h.Write([]byte(req.CallID().Value()))
			ft, _ := req.From().Params.Get("tag")
			h.Write([]byte(ft))
			h.Write([]byte(req.Recipient.String()))
			h.Write([]byte(via.Value()))
			h.Write([]byte(strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)))
		}
		return "z9hG4bKsd" + hex.EncodeToString(h.Sum(nil))
	}
	files, err := filepath.Glob(filepath.Join(tortureDir, "*.dat"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		m, err := sipmsg.ParseMessage(raw)
		req, ok := m.(*sipmsg.Request)
		if err != nil || !ok || validateCode(req) != 0 {
			continue
		}
		n++
		if got, want := statelessBranch(req), reference(req); got != want {
			t.Errorf("%s: %s, was %s", filepath.Base(f), got, want)
		}
	}
	if n < 10 {
		t.Fatalf("only %d requests", n)
	}
}

func validateCode(req *sipmsg.Request) int {
	code, _ := validate(req)
	return code
}
