package integration

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	tmpl, err := os.ReadFile(testdata("kamailio_hash_pvar.cfg"))
	if err != nil {
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
			kam, _ := runKamailio(t, kamailio, strings.NewReplacer("@LIST@", listPath, "@HASH_PVAR@", pvar).Replace(string(tmpl)))
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
