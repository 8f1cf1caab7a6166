package sip

import (
	"strings"
	"testing"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// A caller on TCP reaches a UDP gateway: the proxy records two routes, one
// per transport (RFC 5658), and the in-dialog ACK and BYE arriving over TCP
// consume both and reach the gateway.
func TestTCPCallerUDPGateway(t *testing.T) {
	for _, mode := range []string{ModeStateful, ModeStateless} {
		t.Run(mode, func(t *testing.T) {
			gw := newGateway(t, "answer")
			d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
			cfg := testConfig(mode)
			cfg.Listen = []string{"udp:127.0.0.1:0", "tcp:127.0.0.1:0"}
			s, _ := startProxy(t, cfg, d, dispatchRoute(1))
			tcpAddr := strings.TrimPrefix(s.Addrs()[1], "tcp:")
			u := newUAC(t)
			inv := u.request(sipmsg.INVITE, tcpAddr, []byte("v=0\r\n"))
			inv.SetTransport("TCP")
			rs := u.final(t, inv)
			ok := rs[len(rs)-1]
			if ok.StatusCode != 200 {
				t.Fatalf("INVITE over TCP answered %v", codes(rs))
			}
			rrs := ok.GetHeaders("Record-Route")
			if len(rrs) != 2 || !strings.Contains(rrs[0].Value(), "transport=udp") || !strings.Contains(rrs[1].Value(), "transport=tcp") {
				t.Fatalf("Record-Route %v, want the UDP side above the TCP side", rrs)
			}
			ack := inDialog(sipmsg.ACK, inv, ok, inv.CSeq().SeqNo)
			ack.SetTransport("TCP")
			if err := u.cli.WriteRequest(ack); err != nil {
				t.Fatal(err)
			}
			bye := inDialog(sipmsg.BYE, inv, ok, inv.CSeq().SeqNo+1)
			bye.SetTransport("TCP")
			if r := u.final(t, bye); r[len(r)-1].StatusCode != 200 {
				t.Fatalf("BYE over TCP answered %v", codes(r))
			}
			waitFor(t, "ACK at the gateway", 2*time.Second, func() bool { return gw.acks.Load() == 1 })
			if gw.byes.Load() != 1 {
				t.Fatalf("gateway got %d BYEs", gw.byes.Load())
			}
		})
	}
}
