package sip

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
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
			waitFor(t, "ACK at the gateway", 10*time.Second, func() bool { return gw.acks.Load() == 1 })
			if gw.byes.Load() != 1 {
				t.Fatalf("gateway got %d BYEs", gw.byes.Load())
			}
		})
	}
}

// writeSelfSigned writes a throwaway certificate for 127.0.0.1 and its key.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sipdispatch test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// A caller on TLS reaches a UDP gateway through the tls listener.
func TestTLSCaller(t *testing.T) {
	gw := newGateway(t, "answer")
	d := newFakeDispatcher(map[int][]dispatch.Destination{1: {gw.dest(1)}})
	cfg := testConfig(ModeStateful)
	cfg.Listen = []string{"udp:127.0.0.1:0", "tls:127.0.0.1:0"}
	cfg.TLSCert, cfg.TLSKey = writeSelfSigned(t)
	s, _ := startProxy(t, cfg, d, dispatchRoute(1))
	tlsAddr := strings.TrimPrefix(s.Addrs()[1], "tls:")

	ua, err := sipgo.NewUA(sipgo.WithUserAgent("tls-uac"),
		sipgo.WithUserAgenTLSConfig(&tls.Config{InsecureSkipVerify: true}),
		sipgo.WithUserAgentTransportLayerOptions(sipmsg.WithTransportLayerLogger(testLogger())),
		sipgo.WithUserAgentTransactionLayerOptions(sipmsg.WithTransactionLayerLogger(testLogger())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ua.Close() })
	cli, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	u := &uac{ua: ua, cli: cli, wire: map[string][]int{}}
	inv := u.request(sipmsg.INVITE, tlsAddr, nil)
	inv.SetTransport("TLS")
	rs := u.final(t, inv)
	if c := rs[len(rs)-1].StatusCode; c != 200 {
		t.Fatalf("INVITE over TLS answered %v", codes(rs))
	}
	rrs := rs[len(rs)-1].GetHeaders("Record-Route")
	if len(rrs) != 2 || !strings.Contains(rrs[1].Value(), "transport=tls") {
		t.Fatalf("Record-Route %v, want a tls entry for the caller's side", rrs)
	}
}
