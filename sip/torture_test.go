package sip

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// tortureDir holds RFC 4475's 49 messages byte for byte (SHA256SUMS beside them).
const tortureDir = "testdata/torture"

// tortureExpect is what RFC 4475 (and its MANIFEST.md in tortureDir) allows
// for each message a proxy receives; messages not listed may be forwarded or
// rejected.
var tortureExpect = map[string]func(codes []int) bool{
	// 3.1.1 valid requests: parsed and forwarded, so the gateway's 200 comes back.
	// wsinv too: sipgo v1.7.3 misses its spaced-out From tag (";tag =
	// 98asjd8") and, over TCP, cannot form a transaction key and answers
	// 400 itself; over UDP the proxy's own layer (sip/txn) keys it with an
	// empty tag (RFC 2543 matching), so it is forwarded.
	"wsinv.dat": forwarded, "intmeth.dat": forwarded, "esc01.dat": forwarded,
	"escnull.dat": forwarded, "esc02.dat": forwarded, "lwsdisp.dat": forwarded,
	"longreq.dat": forwarded, "dblreq.dat": forwarded, "semiuri.dat": forwarded,
	"transports.dat": forwarded, "mpart01.dat": forwarded,
	// Responses nobody asked for: dropped.
	"unreason.dat": dropped, "noreason.dat": dropped, "bigcode.dat": dropped,
	"scalarlg.dat": dropped, "bcast.dat": dropped,
	// Invalid requests that must not get through: an error reply or a drop.
	"badinv01.dat": rejected, "clerr.dat": rejected, "ncl.dat": rejected,
	"scalar02.dat": rejected, "quotbal.dat": rejected, "insuf.dat": rejected,
	"mismatch01.dat": only(400), "mismatch02.dat": rejected,
	"badvers.dat": rejected, "unkscm.dat": rejected, "novelsc.dat": rejected,
	"zeromf.dat": only(483),
	// Two values in single-valued headers: 400 (RFC 4475 §3.3.8, §3.3.9).
	"multi01.dat": only(400), "mcl01.dat": only(400),
}

func forwarded(codes []int) bool { return slices.Contains(codes, 200) }
func dropped(codes []int) bool   { return len(codes) == 0 }
func rejected(codes []int) bool {
	return !slices.ContainsFunc(codes, func(c int) bool { return c >= 200 && c < 400 })
}
func only(code int) func([]int) bool {
	return func(codes []int) bool { return len(codes) > 0 && codes[len(codes)-1] == code }
}

// Every RFC 4475 torture message sent over UDP, byte for byte: no panic, no
// hang, valid requests forwarded, invalid ones answered with an error or
// dropped (docs/conformance.md). The outcome table is logged (go test -v).
func TestTortureMessages(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(tortureDir, "*.dat"))
	if len(files) != 49 {
		t.Fatalf("found %d torture messages in %s, want RFC 4475's 49", len(files), tortureDir)
	}
	gw := newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})

	// Replies follow the messages' Via: to the source address and the Via
	// port (5060, or 5050/5070 for two of them), so listen on those ports of
	// a loopback address of our own, the first one free (another test run
	// may hold one).
	socks := bindTortureSockets(t)
	replies := make(chan *sipmsg.Response, 256)
	for _, c := range socks {
		go func() {
			buf := make([]byte, 65535)
			for {
				n, _, err := c.ReadFromUDP(buf)
				if err != nil {
					return
				}
				if m, err := sipmsg.ParseMessage(slices.Clone(buf[:n])); err == nil {
					if r, ok := m.(*sipmsg.Response); ok {
						replies <- r
					}
				}
			}
		}()
	}

	var table, failed []string
	var dropTotal int64
	var last string
	for _, f := range files {
		name := filepath.Base(f)
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// A proxy per message: several messages share a Via branch and
		// would otherwise match each other's transactions.
		s, proxy := startProxy(t, testConfig(ModeStateful), d, dispatchRoute(1))
		paddr, _ := net.ResolveUDPAddr("udp", proxy)
		var branch string
		if m, err := sipmsg.ParseMessage(slices.Clone(data)); err == nil && m.Via() != nil {
			branch, _ = m.Via().Params.Get("branch")
		}
		if _, err := socks[0].WriteToUDP(data, paddr); err != nil {
			t.Fatalf("%s: send: %v", name, err)
		}
		var got []int
		var reason string
		// A message that must be answered gets time for a busy machine (the
		// loop ends at the first final reply); one that may be dropped only
		// a short window, which is all a drop can be observed by.
		window := 400 * time.Millisecond
		if want, ok := tortureExpect[name]; ok && !want(nil) {
			window = 10 * time.Second
		}
		wait := time.After(window)
	collect:
		for {
			select {
			case r := <-replies:
				if b, _ := r.Via().Params.Get("branch"); r.Via() != nil && b == branch {
					got = append(got, r.StatusCode)
					reason = r.Reason
					if r.StatusCode >= 200 {
						break collect
					}
				}
			case <-wait:
				break collect
			}
		}
		outcome := "dropped"
		if len(got) > 0 {
			outcome = strings.Trim(fmt.Sprint(got), "[]") + " (" + reason + ")"
		}
		table = append(table, fmt.Sprintf("%-15s %s", name, outcome))
		if want, ok := tortureExpect[name]; ok && !want(got) {
			failed = append(failed, name+": "+outcome)
		}
		dropTotal += s.Dropped()
		last = proxy
	}
	sort.Strings(table)
	t.Logf("torture outcomes (replies seen by the sender):\n%s", strings.Join(table, "\n"))
	if len(failed) > 0 {
		t.Errorf("unexpected outcomes: %s", strings.Join(failed, "; "))
	}

	// Still alive and answering.
	u := newUAC(t)
	host, port, _ := sipmsg.ParseAddr(last)
	opt := sipmsg.NewRequest(sipmsg.OPTIONS, sipmsg.Uri{Scheme: "sip", Host: host, Port: port})
	opt.SetDestination(last)
	opt.SetTransport("UDP")
	if rs := u.final(t, opt); rs[len(rs)-1].StatusCode != 200 {
		t.Fatalf("proxy answers OPTIONS %d after the torture run", rs[len(rs)-1].StatusCode)
	}
	t.Logf("messages dropped and counted: %d", dropTotal)
	if dropTotal == 0 {
		t.Error(errors.New("no message counted as dropped, though unparsable ones were sent"))
	}
}

// bindTortureSockets binds UDP ports 5060, 5050 and 5070 on the first
// address 127.0.83.x where all three are free; they are closed at cleanup.
func bindTortureSockets(t *testing.T) []*net.UDPConn {
	t.Helper()
	for x := 1; x < 255; x++ {
		ip := net.IPv4(127, 0, 83, byte(x))
		var socks []*net.UDPConn
		for _, port := range []int{5060, 5050, 5070} {
			c, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
			if err != nil {
				break
			}
			socks = append(socks, c)
		}
		if len(socks) == 3 {
			t.Cleanup(func() {
				for _, c := range socks {
					c.Close()
				}
			})
			return socks
		}
		for _, c := range socks {
			c.Close()
		}
	}
	t.Fatal("no 127.0.83.x address with UDP ports 5060, 5050 and 5070 free")
	return nil
}
