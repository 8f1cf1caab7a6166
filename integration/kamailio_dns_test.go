package integration

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sipdispatch/sipdispatch/sip/resolve/resolvetest"
)

// privateResolvConf writes a resolv.conf naming nameserver and returns the
// command that runs a program with it as its /etc/resolv.conf, in a mount
// namespace of its own: the machine's resolver configuration is not touched.
// Kamailio resolves through the C library, which reads only that file and
// asks only port 53.
func privateResolvConf(t *testing.T, nameserver string) []string {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Fatalf("unshare (util-linux) is needed to give Kamailio a private resolv.conf: %v", err)
	}
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(conf, []byte("nameserver "+nameserver+"\noptions attempts:1 timeout:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{"unshare", "-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, conf}
}

// The same destination, sip:gw.test, through Kamailio 5.6 (the core's
// forward(), dns_srv_lb=on) and through sipdispatch, both asking one DNS
// server on loopback: _sip._udp.gw.test has two priority-10 targets
// weighted 1:3 and a priority-20 one; gw.test's own A record names a decoy.
// Both must send every call to a priority-10 target at its SRV port (not to
// the A record's 5060). sipdispatch shares them 3:1 by weight (RFC 2782);
// Kamailio does too only when built with DNS_SRV_LB (kamailio -v), else it
// takes the first of its sorted records, the heaviest, every time
// (docs/kamailio-compat.md#dns).
func TestSRVChoiceAsKamailio(t *testing.T) {
	kamailio, err := exec.LookPath("kamailio")
	if err != nil {
		t.Fatalf("kamailio is not installed (Debian: apt-get install kamailio): this test compares sipdispatch's SRV choice with the real Kamailio's: %v", err)
	}
	const calls = 400
	gw := map[string]*Gateway{}
	for _, name := range []string{"light", "heavy", "backup"} {
		gw[name] = startGateway(t, nextIP(), answer200)
	}
	decoyIP := nextIP()
	gw["decoy"] = startGatewayAt(t, net.JoinHostPort(decoyIP, "5060"), answer200)
	hostPort := func(name string) (string, string) {
		h, p, _ := net.SplitHostPort(gw[name].Addr)
		return h, p
	}
	var records []string
	for _, r := range []struct {
		name             string
		priority, weight int
	}{{"light", 10, 10}, {"heavy", 10, 30}, {"backup", 20, 100}} {
		ip, port := hostPort(r.name)
		records = append(records,
			fmt.Sprintf("_sip._udp.gw.test. 300 IN SRV %d %d %s %s.gw.test.", r.priority, r.weight, port, r.name),
			fmt.Sprintf("%s.gw.test. 300 IN A %s", r.name, ip))
	}
	records = append(records, "gw.test. 300 IN A "+decoyIP)
	dnsIP := nextIP()
	resolvetest.StartAt(t, net.JoinHostPort(dnsIP, "53"), records...)
	wrap := privateResolvConf(t, dnsIP)

	list := "1 sip:gw.test 0 0\n"
	listPath := filepath.Join(t.TempDir(), "dispatcher.list")
	if err := os.WriteFile(listPath, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	kam, _ := startKamailioCfg(t, kamailio, "kamailio_dns.cfg", wrap, "@LIST@", listPath)
	node := startNodeWrapped(t, nextIP(), wrap, nodeYAML("stateless", "", "- name: all\n  dispatch: {set: 1, alg: 4}"), list)

	run := func(via, addr string) map[string]int {
		before := gatewayCalls(gw)
		for i := range calls {
			if r := sendRaw(t, addr, invite(fmt.Sprintf("%s-%d", via, i), "")); !strings.HasPrefix(r, "SIP/2.0 200") {
				t.Fatalf("call %d through %s: %q", i, via, firstLine(r))
			}
		}
		got := gatewayCalls(gw)
		for name, n := range before {
			got[name] -= n
		}
		return got
	}
	kamCalls, ourCalls := run("kamailio", kam), run("sipdispatch", node.SIPAddr)
	t.Logf("calls per target: Kamailio %v, sipdispatch %v", kamCalls, ourCalls)
	version, err := exec.Command(kamailio, "-v").Output()
	if err != nil {
		t.Fatal(err)
	}
	kamLB := strings.Contains(string(version), "DNS_SRV_LB")
	for who, c := range map[string]map[string]int{"Kamailio": kamCalls, "sipdispatch": ourCalls} {
		if c["backup"] != 0 || c["decoy"] != 0 {
			t.Errorf("%s sent %d calls to the priority-20 target and %d to the A record", who, c["backup"], c["decoy"])
		}
		if who == "Kamailio" && !kamLB {
			if c["heavy"] != calls {
				t.Errorf("Kamailio without DNS_SRV_LB: heavy %d, light %d of %d calls; want all on the heaviest (docs/kamailio-compat.md#dns)", c["heavy"], c["light"], calls)
			}
			continue
		}
		// Weight 30 of 40: 300 of 400 expected, the binomial's sd is 8.7.
		if h := c["heavy"]; h < 250 || h > 350 || c["light"]+h != calls {
			t.Errorf("%s: heavy %d, light %d of %d calls; want about 3:1 by SRV weight", who, h, c["light"], calls)
		}
	}
}
