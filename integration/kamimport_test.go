package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// hash_pvar with $avp/$var and transformations must hash the same text as
// Kamailio's, or algorithm 7 picks another gateway. Kamailio's script assigns
// $avp(i:273) and $var(x) from headers (testdata/kamailio_hash_pvar.cfg);
// sipdispatch declares the same values in hash_pvar_vars. The same requests
// go through both and must reach the same gateway.
func TestHashPVarAsKamailio(t *testing.T) {
	kamailio, err := exec.LookPath("kamailio")
	if err != nil {
		t.Fatalf("kamailio is not installed (Debian: apt-get install kamailio): this test compares sipdispatch's choices with the real Kamailio's: %v", err)
	}
	const perPVar = 60
	gw, nameOf, list := kamGateways(t, 5)
	listPath := filepath.Join(t.TempDir(), "dispatcher.list")
	if err := os.WriteFile(listPath, []byte(list), 0o644); err != nil {
		t.Fatal(err)
	}
	const vars = `hash_pvar_vars: {"$avp(i:273)": "$hdr(X-Account)", "$var(x)": "$(hdr(X-Caller){nameaddr.uri}{uri.host})"}`
	rng := rand.New(rand.NewPCG(7, 8))
	for i, pvar := range []string{
		"$(avp(i:273){s.tolower})",
		"$(ci{s.select,0,@}{s.toupper})|$var(x)",
		"$(fu{uri.user}{s.substr,1,4})-$(tu{uri.host}{s.tolower})-$(avp(i:273){s.select,-1,-})",
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			kam, _ := startKamailioCfg(t, kamailio, "kamailio_hash_pvar.cfg", nil, "@LIST@", listPath, "@HASH_PVAR@", pvar)
			node := startNode(t, nodeYAML("stateless", fmt.Sprintf("hash_pvar: '%s'\n%s", pvar, vars),
				"- {name: all, dispatch: {set: 1, alg: 7}}"), list)
			var reqs []kamRequest
			for j := 0; j < perPVar; j++ {
				r := randomRequest(rng, fmt.Sprintf("p%dr%d-", i, j), 1, 0)
				acct := fmt.Sprintf("%s-%d", []string{"ACME", "acme", "Globex", "init-ech"}[rng.IntN(4)], rng.IntN(1000))
				caller := fmt.Sprintf(`%s<sip:%s@%s;x=1>;tag=%d`, []string{"", `"A <x>" `, "Bob "}[rng.IntN(3)],
					[]string{"alice", "+4930123"}[rng.IntN(2)], []string{"EXAMPLE.com", "10.1.2.3", "[2001:db8::1]:5070"}[rng.IntN(3)], j)
				r.text = strings.Replace(r.text, "X-Route: 1-0\n", "X-Account: "+acct+"\nX-Caller: "+caller+"\n", 1)
				r.key = acct + " " + caller + " " + r.key
				reqs = append(reqs, r)
			}
			sameGateways(t, kam, node.SIPAddr, reqs, gw, nameOf)
		})
	}
}

// kamGateways starts n answering gateways on one address and returns them by
// name (g1..gN), the names by address, and a list file putting them all in
// set 1.
func kamGateways(t *testing.T, n int) (map[string]*Gateway, map[string]string, string) {
	t.Helper()
	ip := nextIP()
	gw, nameOf := map[string]*Gateway{}, map[string]string{}
	var list strings.Builder
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("g%d", i)
		gw[name] = startGateway(t, ip, answer200)
		nameOf[gw[name].Addr] = name
		fmt.Fprintf(&list, "1 sip:%s 0 0 duid=%s\n", gw[name].Addr, name)
	}
	return gw, nameOf, list.String()
}

// sameGateways sends every request through Kamailio, then through
// sipdispatch, and fails unless each reached the same gateway both ways and
// most reached one, on several gateways.
func sameGateways(t *testing.T, kam, node string, reqs []kamRequest, gw map[string]*Gateway, nameOf map[string]string) {
	t.Helper()
	kamPick := make([]string, len(reqs))
	reached, used := 0, map[string]bool{}
	for i, r := range reqs {
		kamPick[i] = pickedBy(t, kam, r, nameOf)
		if gw[kamPick[i]] != nil {
			reached++
			used[kamPick[i]] = true
		}
	}
	// Requests spread over several gateways, or agreeing would prove little.
	if reached < len(reqs)*9/10 || len(used) < 2 {
		t.Fatalf("through Kamailio %d of %d requests reached a gateway, %d distinct: %v", reached, len(reqs), len(used), kamPick)
	}
	mismatches := 0
	for i, r := range reqs {
		if got := pickedBy(t, node, r, nameOf); got != kamPick[i] {
			mismatches++
			t.Errorf("Kamailio picked %s, sipdispatch %s for %s", kamPick[i], got, r.key)
		}
	}
	if mismatches > 0 {
		t.Fatalf("%d of %d requests went to a different gateway than Kamailio's", mismatches, len(reqs))
	}
	t.Logf("%d requests, every one to Kamailio's gateway; calls per gateway %v", len(reqs), gatewayCalls(gw))
}

// import-kamailio's promise: the config it writes routes the same requests to
// the same gateways as Kamailio running the original. Each fixture of
// testdata/kamimport runs in Kamailio 5.6 (only its listen address, list
// file, fork mode and, for the module's sample, database, control socket and
// an answer to the harness's OPTIONS probe are rewritten to run here), is imported with `sipdispatch import-kamailio`,
// and the same INVITEs go through both. For every request the final status
// must be the same and its Call-ID must have reached the same gateways
// (failover included: a gateway answering 503 makes the failover fixture try
// the next one).
func TestImportKamailioRoutesAsKamailio(t *testing.T) {
	kamailio, err := exec.LookPath("kamailio")
	if err != nil {
		t.Fatalf("kamailio is not installed (Debian: apt-get install kamailio): this test compares imported configs with the real Kamailio's routing: %v", err)
	}
	tests := []struct {
		fixture string
		rewrite []string // old, new pairs applied to the fixture for both
		list    string   // G1..G5 replaced by gateway addresses
		fail    string   // the gateway answering 503, if any
		reqs    func(i int) (callID, extra string)
	}{
		{
			fixture: "dispatcher-example.cfg",
			rewrite: []string{"port=5060", "listen=udp:@LISTEN@", `loadmodule "db_mysql.so"`, "",
				`modparam("dispatcher", "db_url", DBURL)`, `modparam("dispatcher", "list_file", "/etc/kamailio/dispatcher.list")`,
				`loadmodule "ctl.so"`, `loadmodule "ctl.so"` + "\nmodparam(\"ctl\", \"binrpc\", \"unix:@CTL@\")",
				// The harness's readiness probe: the sample answers an
				// OPTIONS without a user 484 (sipdispatch answers it 200).
				"request_route {", "request_route {\n\tif (is_method(\"OPTIONS\") && uri == myself) { sl_send_reply(\"200\", \"OK\"); exit; }"},
			list: "1 sip:G1 0 0\n1 sip:G2 0 0\n1 sip:G3 0 0\n",
			fail: "g2", // answers 503: the sample fails over only on 500 and timeouts
			reqs: func(i int) (string, string) { return fmt.Sprintf("example-%d@client", i), "" },
		},
		{
			fixture: "lb-tutorial.cfg",
			list:    "1 sip:G1 0 0\n1 sip:G2 0 0\n1 sip:G3 0 0\n2 sip:G4 0 0\n2 sip:G5 0 0\n",
			reqs: func(i int) (string, string) {
				if i%2 == 0 {
					return fmt.Sprintf("lb-%d-%x@client", i, i*7919), ""
				}
				return fmt.Sprintf("lb-%d@client", i), fmt.Sprintf("X-Account: %s-%d\n", []string{"ACME", "acme", "Globex"}[i%3], i%5)
			},
		},
		{
			fixture: "failover.cfg",
			list:    "1 sip:G1 0 0\n1 sip:G2 0 0\n1 sip:G3 0 0\n",
			fail:    "g2", // 503: retried on the next gateway, and marked inactive
			reqs:    func(i int) (string, string) { return fmt.Sprintf("fo-%d-%x@client", i, i*104729), "" },
		},
	}
	for _, tc := range tests {
		t.Run(tc.fixture, func(t *testing.T) {
			ip := nextIP()
			gw, nameOf := map[string]*Gateway{}, map[string]string{}
			list := tc.list
			for i := 1; i <= 5; i++ {
				name := fmt.Sprintf("g%d", i)
				mode := answer200
				if name == tc.fail {
					mode = answer503
				}
				gw[name] = startGateway(t, ip, mode)
				nameOf[gw[name].Addr] = name
				list = strings.ReplaceAll(list, fmt.Sprintf("G%d", i), gw[name].Addr)
			}
			dir := t.TempDir()
			listPath := filepath.Join(dir, "dispatcher.list")
			if err := os.WriteFile(listPath, []byte(list), 0o644); err != nil {
				t.Fatal(err)
			}
			src, err := os.ReadFile(testdata("kamimport/" + tc.fixture))
			if err != nil {
				t.Fatal(err)
			}
			cfg := string(src)
			for i := 0; i+1 < len(tc.rewrite); i += 2 {
				if !strings.Contains(cfg, tc.rewrite[i]) {
					t.Fatalf("fixture has no %q to rewrite", tc.rewrite[i])
				}
				cfg = strings.Replace(cfg, tc.rewrite[i], tc.rewrite[i+1], 1)
			}
			cfg = regexp.MustCompile(`(?m)^listen=.*$`).ReplaceAllString(cfg, "listen=udp:@LISTEN@")
			cfg = strings.NewReplacer("/etc/kamailio/dispatcher.list", listPath, "fork=yes", "fork=no").Replace(cfg)
			// startKamailioCfg reads its config under testdata/; the
			// rewritten fixture lives in this test's temp dir.
			runCfg := filepath.Join(dir, "run.cfg")
			if err := os.WriteFile(runCfg, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			rel, err := filepath.Rel(testdata(""), runCfg)
			if err != nil {
				t.Fatal(err)
			}
			kam, _ := startKamailioCfg(t, kamailio, rel, nil)

			// Import the config Kamailio runs (its own address included).
			kamCfg := filepath.Join(dir, "kamailio.cfg")
			if err := os.WriteFile(kamCfg, []byte(strings.ReplaceAll(cfg, "@LISTEN@", kam)), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(dir, "sipdispatch.yaml")
			report, err := exec.Command(binary, "import-kamailio", kamCfg, "-list", listPath, "-o", out).CombinedOutput()
			if err != nil {
				t.Fatalf("import-kamailio: %v\n%s", err, report)
			}
			imported, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			// The node runs on the harness's addresses instead of Kamailio's.
			yml := regexp.MustCompile(`(?ms)^listen:\n(  - .*?\n)+`).ReplaceAllString(string(imported), "")
			yml = "node: {name: n1, data_dir: ./data}\nlisten: [udp:%SIP%]\napi: {listen: \"%API%\"}\n" + yml
			t.Logf("import-kamailio report:\n%s", report)
			node := startNode(t, yml, list)

			var reqs []kamRequest
			for i := 0; i < 12; i++ {
				callID, extra := tc.reqs(i)
				reqs = append(reqs, kamRequest{key: callID, text: fmt.Sprintf("INVITE sip:+4930%d@example.com SIP/2.0\n"+
					"Via: SIP/2.0/UDP %%LOCAL%%;branch=z9hG4bK-%s;rport\nFrom: <sip:alice@example.com>;tag=%d\nTo: <sip:+4930%d@example.com>\n"+
					"Call-ID: %s\nCSeq: 1 INVITE\nMax-Forwards: 70\n%sContact: <sip:caller@%%LOCAL%%>\nContent-Length: 0\n\n",
					i, strings.ReplaceAll(callID, "@", "."), i, i, callID, extra)})
			}
			seen := func(callID string) string {
				var names []string
				for name, g := range gw {
					g.mu.Lock()
					if g.calls[callID] {
						names = append(names, name)
					}
					g.mu.Unlock()
				}
				sort.Strings(names)
				return strings.Join(names, "+")
			}
			kamGot := make([]string, len(reqs))
			failedOver := 0
			for i, r := range reqs {
				kamGot[i] = firstLine(sendRaw(t, kam, r.text)) +
					" via " + seen(r.key)
				if strings.Contains(seen(r.key), "+") {
					failedOver++
				}
			}
			for i, r := range reqs {
				got := firstLine(sendRaw(t, node.SIPAddr, r.text)) + " via " + seen(r.key)
				if got != kamGot[i] {
					t.Errorf("%s: Kamailio %q, sipdispatch %q", r.key, kamGot[i], got)
				}
				// Kamailio marked a failed gateway before answering; wait
				// for sipdispatch's mark to apply before the next request.
				if tc.fail != "" && strings.Contains(kamGot[i], "+") {
					waitFor(t, "the failed gateway to be marked", 5*time.Second, func() bool {
						flags, _ := destStates(t, node)
						return strings.HasPrefix(flags[gw[tc.fail].URI()], "I")
					})
				}
			}
			if tc.fixture == "failover.cfg" && failedOver == 0 {
				t.Errorf("no request failed over in Kamailio: the fixture tests nothing: %v", kamGot)
			}
			t.Logf("Kamailio and sipdispatch: %v", kamGot)
		})
	}
}
