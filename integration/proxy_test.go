package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// nodeYAML is a node configuration for tests: SIP on %SIP%, API on %API%,
// the given proxy mode and dispatcher keys, and one route. fr_timer is 5 s:
// the node is a race-detector build on a busy 2-core machine, and only the
// failover test wants a gateway's silence noticed sooner (withFRTimer).
func nodeYAML(mode, dispatcher, routes string) string {
	return fmt.Sprintf(`node: {name: n1, data_dir: ./data}
listen: [udp:%%SIP%%, tcp:%%SIP%%]
proxy: {mode: %s, record_route: true, fr_timer: 5s, fr_inv_timer: 30s}
api: {listen: "%%API%%"}
log: {level: info}
dispatcher:
  list_file: dispatcher.list
%s
routes:
%s
`, mode, indent(dispatcher, "  "), indent(routes, "  "))
}

// withFRTimer replaces nodeYAML's fr_timer.
func withFRTimer(yaml string, d time.Duration) string {
	return strings.Replace(yaml, "fr_timer: 5s", "fr_timer: "+d.String(), 1)
}

func indent(s, pfx string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l = strings.TrimRight(l, " "); l != "" {
			b.WriteString(pfx + strings.TrimLeft(l, "\t") + "\n")
		}
	}
	return b.String()
}

func listFile(set int, gws ...*Gateway) string {
	var b strings.Builder
	for i, g := range gws {
		fmt.Fprintf(&b, "%d %s 0 0 duid=gw%d\n", set, g.URI(), i+1)
	}
	return b.String()
}

// callerArgs are the SIPp arguments for n calls at rate per second through the
// node, each held for hold.
func callerArgs(n *Node, calls, rate int, hold time.Duration) []string {
	ip := strings.Split(n.SIPAddr, ":")[0]
	return []string{n.SIPAddr, "-sf", testdata("uac_call.xml"), "-s", "4930123", "-i", ip, "-p", "0",
		"-t", "u1", "-m", fmt.Sprint(calls), "-r", fmt.Sprint(rate), "-l", fmt.Sprint(max(rate*2, 50)),
		"-d", fmt.Sprint(hold.Milliseconds()), "-recv_timeout", "10000", "-buff_size", "4194304"}
}

// rpc calls the node's JSON-RPC API and decodes the result into out.
func rpc(t *testing.T, n *Node, out any, method string, params ...any) {
	t.Helper()
	if err := rpcErr(n, out, method, params...); err != nil {
		t.Fatalf("%s %v: %v", method, params, err)
	}
}

func rpcErr(n *Node, out any, method string, params ...any) error {
	body, _ := json.Marshal(map[string]any{"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
	resp, err := http.Post("http://"+n.APIAddr+"/RPC", "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var r struct {
		Result json.RawMessage
		Error  *struct {
			Code    int
			Message string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return err
	}
	if r.Error != nil {
		return fmt.Errorf("rpc error %d: %s", r.Error.Code, r.Error.Message)
	}
	if out != nil {
		return json.Unmarshal(r.Result, out)
	}
	return nil
}

// destStates returns FLAGS and DLGLOAD per URI from dispatcher.list; the
// call must succeed.
func destStates(t *testing.T, n *Node) (flags map[string]string, load map[string]int) {
	t.Helper()
	flags, load, err := listStates(n)
	if err != nil {
		t.Fatalf("dispatcher.list: %v", err)
	}
	return flags, load
}

// listStates reads FLAGS and DLGLOAD per URI from the node's dispatcher.list.
func listStates(n *Node) (flags map[string]string, load map[string]int, err error) {
	var l struct {
		RECORDS []struct {
			SET struct {
				TARGETS []struct {
					DEST struct {
						URI     string
						FLAGS   string
						RUNTIME struct{ DLGLOAD int }
					}
				}
			}
		}
	}
	flags, load = map[string]string{}, map[string]int{}
	if err := rpcErr(n, &l, "dispatcher.list"); err != nil {
		return flags, load, err
	}
	for _, r := range l.RECORDS {
		for _, d := range r.SET.TARGETS {
			flags[d.DEST.URI] = d.DEST.FLAGS
			load[d.DEST.URI] = d.DEST.RUNTIME.DLGLOAD
		}
	}
	return flags, load, nil
}

// 1,000 calls through the proxy, in both modes, with 0 failures; round-robin
// splits them exactly and every call is torn down at its gateway.
func TestThousandCallsBothModes(t *testing.T) {
	for _, mode := range []string{"stateful", "stateless"} {
		t.Run(mode, func(t *testing.T) {
			ip := nextIP()
			gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
			n := startNode(t, nodeYAML(mode, "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, gws...))
			code, out := sipp(t, 120*time.Second, callerArgs(n, 1000, 200, 0)...)
			if code != 0 {
				t.Fatalf("sipp exit %d (some calls failed):\n%s", code, tail(out, 40))
			}
			for i, g := range gws {
				if c := g.Calls(); c < 333 || c > 334 {
					t.Errorf("gateway %d got %d calls, want 333 or 334 (round-robin)", i+1, c)
				}
				if a := g.Active(); a != 0 {
					t.Errorf("gateway %d has %d calls never ended by BYE", i+1, a)
				}
			}
		})
	}
}

// Each algorithm's distribution as the gateways see it. Algorithm 10 is not
// here: with calls that end at once every load is 0 and ties go to the first
// entry, as in Kamailio; its split of concurrent calls is checked exactly by
// TestCallLoadRisesAndReturnsToZero.
func TestAlgorithmDistributionAtGateways(t *testing.T) {
	const calls = 600
	tests := []struct {
		alg     int
		attrs   []string // per gateway
		extra   string   // dispatcher keys
		want    []float64
		tol     float64 // share tolerance, points
		exactly bool
	}{
		{alg: 4, want: []float64{1. / 3, 1. / 3, 1. / 3}, exactly: true},
		{alg: 0, want: []float64{1. / 3, 1. / 3, 1. / 3}, tol: 8},  // hash of random SIPp Call-IDs
		{alg: 16, want: []float64{1. / 3, 1. / 3, 1. / 3}, tol: 8}, // rendezvous, equal weights
		{alg: 9, attrs: []string{"weight=60", "weight=30", "weight=10"}, want: []float64{.6, .3, .1}, tol: 3},
		{alg: 8, want: []float64{0, 0, 1}, exactly: true}, // first in list order = last line
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("alg%d", tc.alg), func(t *testing.T) {
			ip := nextIP()
			var gws []*Gateway
			var list strings.Builder
			for i := 0; i < 3; i++ {
				g := startGateway(t, ip, answer200)
				gws = append(gws, g)
				a := fmt.Sprintf("duid=gw%d", i+1)
				if tc.attrs != nil {
					a += ";" + tc.attrs[i]
				}
				fmt.Fprintf(&list, "1 %s 0 0 %s\n", g.URI(), a)
			}
			n := startNode(t, nodeYAML("stateful", tc.extra, fmt.Sprintf(`- name: all
  dispatch: {set: 1, alg: %d}`, tc.alg)), list.String())
			code, out := sipp(t, 90*time.Second, callerArgs(n, calls, 150, 0)...)
			if code != 0 {
				t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
			}
			total := 0
			for _, g := range gws {
				total += g.Calls()
			}
			if total != calls {
				t.Fatalf("gateways saw %d calls, want %d", total, calls)
			}
			for i, g := range gws {
				share := float64(g.Calls()) / calls
				if tc.exactly {
					if math.Abs(share-tc.want[i])*calls > 1 {
						t.Errorf("gateway %d share %.3f, want exactly %.3f", i+1, share, tc.want[i])
					}
				} else if math.Abs(share-tc.want[i])*100 > tc.tol {
					t.Errorf("gateway %d share %.3f, want %.3f ± %.0f points", i+1, share, tc.want[i], tc.tol)
				}
			}
		})
	}
}

// A gateway answering 503 and a silent one are failed over within the same
// call and marked inactive after the threshold; keepalives bring them back.
func TestFailoverMarkingAndKeepalive(t *testing.T) {
	ip := nextIP()
	bad := startGateway(t, ip, answer503)
	dead := startGateway(t, ip, deaf)
	good := startGateway(t, ip, answer200)
	// Round-robin over bad, dead, good (list order is reverse line order).
	list := fmt.Sprintf("1 %s 0 0 duid=good\n1 %s 0 0 duid=dead\n1 %s 0 0 duid=bad\n", good.URI(), dead.URI(), bad.URI())
	n := startNode(t, withFRTimer(nodeYAML("stateful", `flags: 2
ds_probing_threshold: 2
ds_inactive_threshold: 1
ds_ping_interval: 1
ds_probing_mode: 1`, `- name: all
  dispatch:
    set: 1
    alg: 4
    failover: {on: ["408", "5xx"], mark: "t"}`), time.Second), list)

	// Every call succeeds although two of three gateways fail.
	code, out := sipp(t, 60*time.Second, callerArgs(n, 12, 4, 0)...)
	if code != 0 {
		t.Fatalf("sipp exit %d (failover did not save every call):\n%s", code, tail(out, 30))
	}
	if good.Active() != 0 || good.Calls() != 12 {
		t.Fatalf("good gateway: %d calls, %d active; want 12 calls all ended", good.Calls(), good.Active())
	}
	waitFor(t, "the 503 and the dead gateway to be inactive", 10*time.Second, func() bool {
		f, _ := destStates(t, n)
		return strings.HasPrefix(f[bad.URI()], "I") && strings.HasPrefix(f[dead.URI()], "I")
	})
	// Once inactive they get no calls.
	badBefore, deadBefore := bad.Calls(), dead.Calls()
	if code, out := sipp(t, 60*time.Second, callerArgs(n, 10, 10, 0)...); code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	if bad.Calls() != badBefore || dead.Calls() != deadBefore {
		t.Errorf("inactive gateways still got calls: 503 %d→%d, dead %d→%d", badBefore, bad.Calls(), deadBefore, dead.Calls())
	}
	// Keepalives bring both back once they answer OPTIONS again.
	bad.SetMode(answer200)
	dead.SetMode(answer200)
	waitFor(t, "keepalives to reactivate both gateways", 15*time.Second, func() bool {
		f, _ := destStates(t, n)
		return strings.HasPrefix(f[bad.URI()], "A") && strings.HasPrefix(f[dead.URI()], "A")
	})
	if bad.Options() == 0 || dead.Options() == 0 {
		t.Errorf("no OPTIONS keepalives seen: bad %d, dead %d", bad.Options(), dead.Options())
	}
}

// Algorithm 10: load rises with answered calls and returns to 0 after the BYEs.
func TestCallLoadRisesAndReturnsToZero(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	n := startNode(t, nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), listFile(1, gws...))
	const calls = 40
	uac := startSIPp(t, 60*time.Second, callerArgs(n, calls, 40, 4*time.Second)...)
	waitFor(t, "all calls to be up", 20*time.Second, func() bool {
		_, load := destStates(t, n)
		sum := 0
		for _, l := range load {
			sum += l
		}
		return sum == calls
	})
	_, load := destStates(t, n)
	for uri, l := range load {
		if l != calls/2 {
			t.Errorf("%s load %d during the calls, want %d (least-loaded splits evenly)", uri, l, calls/2)
		}
	}
	code, out := uac.wait(t)
	if code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	waitFor(t, "load to return to 0", 10*time.Second, func() bool {
		_, load := destStates(t, n)
		for _, l := range load {
			if l != 0 {
				return false
			}
		}
		return true
	})
}

// sendRaw sends one request over UDP and returns the first final status line.
func sendRaw(t *testing.T, addr, msg string) string {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	la := c.LocalAddr().String()
	msg = strings.ReplaceAll(msg, "%LOCAL%", la)
	msg = strings.ReplaceAll(msg, "\n", "\r\n")
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 65535)
	for {
		k, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no final reply: %v", err)
		}
		resp := string(buf[:k])
		line, _, _ := strings.Cut(resp, "\r\n")
		if !strings.HasPrefix(line, "SIP/2.0 1") {
			return resp
		}
	}
}

func invite(callID, maxForwards string) string {
	mf := ""
	if maxForwards != "" {
		mf = "Max-Forwards: " + maxForwards + "\n"
	}
	return "INVITE sip:4930123@example.com SIP/2.0\nVia: SIP/2.0/UDP %LOCAL%;branch=z9hG4bK-" + callID + ";rport\n" +
		"From: <sip:alice@example.com>;tag=a1\nTo: <sip:4930123@example.com>\nCall-ID: " + callID + "\nCSeq: 1 INVITE\n" +
		mf + "Contact: <sip:alice@%LOCAL%>\nContent-Length: 0\n\n"
}

// Max-Forwards 0 gets 483; a set with every gateway down gets 503 + Retry-After.
func TestTooManyHopsAndNoGateway(t *testing.T) {
	ip := nextIP()
	g := startGateway(t, ip, answer200)
	n := startNode(t, nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, g))
	if r := sendRaw(t, n.SIPAddr, invite("mf0", "0")); !strings.HasPrefix(r, "SIP/2.0 483") {
		t.Fatalf("Max-Forwards 0: got %q, want 483", firstLine(r))
	}
	if g.Calls() != 0 {
		t.Fatal("a Max-Forwards 0 INVITE reached the gateway")
	}
	rpc(t, n, nil, "dispatcher.set_state", "i", 1, "all")
	r := sendRaw(t, n.SIPAddr, invite("down", "70"))
	if !strings.HasPrefix(r, "SIP/2.0 503") || !strings.Contains(strings.ToLower(r), "\r\nretry-after:") {
		t.Fatalf("all gateways inactive: got\n%s\nwant 503 with Retry-After", r)
	}
	rpc(t, n, nil, "dispatcher.set_state", "a", 1, "all")
	if r := sendRaw(t, n.SIPAddr, invite("up", "70")); !strings.HasPrefix(r, "SIP/2.0 200") {
		t.Fatalf("after reactivation: got %q, want 200", firstLine(r))
	}
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\r\n"); return l }

// metric sums the values of the /metrics series whose line starts with
// prefix (name plus the first labels), e.g. `sipdispatch_selections_total{set="1"`.
func metric(t *testing.T, n *Node, prefix string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.APIAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	sum := 0.0
	for _, l := range strings.Split(body.String(), "\n") {
		if strings.HasPrefix(l, prefix) {
			var v float64
			fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v)
			sum += v
		}
	}
	return sum
}

// The request, selection and reply counters move with real calls.
func TestMetricsCountRealCalls(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	n := startNode(t, nodeYAML("stateful", "", `- name: pstn
  dispatch: {set: 1, alg: 4}`), listFile(1, gws...))
	const calls = 20
	if code, out := sipp(t, 60*time.Second, callerArgs(n, calls, 20, 0)...); code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	checks := []struct {
		prefix string
		want   float64
	}{
		{`sipdispatch_sip_requests_total{method="INVITE",route="pstn"}`, calls},
		{`sipdispatch_sip_requests_total{method="BYE",route="in-dialog"}`, calls},
		{`sipdispatch_selections_total{set="1",uri="` + gws[0].URI() + `"}`, calls / 2},
		{`sipdispatch_selections_total{set="1",uri="` + gws[1].URI() + `"}`, calls / 2},
	}
	for _, c := range checks {
		if got := metric(t, n, c.prefix); got != c.want {
			t.Errorf("%s = %v, want %v", c.prefix, got, c.want)
		}
	}
	// Each call: 200 to the INVITE and 200 to the BYE went upstream.
	if got := metric(t, n, `sipdispatch_sip_replies_total{class="2xx"}`); got < 2*calls {
		t.Errorf("2xx replies %v, want at least %d", got, 2*calls)
	}
}

// Calls arriving over TCP leave to UDP gateways and come back: the proxy
// bridges transports (two Record-Routes) in both directions, in both modes.
func TestCallsOverTCP(t *testing.T) {
	for _, mode := range []string{"stateful", "stateless"} {
		t.Run(mode, func(t *testing.T) {
			ip := nextIP()
			gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
			n := startNode(t, nodeYAML(mode, "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, gws...))
			args := callerArgs(n, 100, 50, 0)
			for i, a := range args {
				if a == "u1" {
					args[i] = "t1" // one TCP connection for all calls
				}
			}
			if code, out := sipp(t, 60*time.Second, args...); code != 0 {
				t.Fatalf("sipp over TCP exit %d:\n%s", code, tail(out, 40))
			}
			for i, g := range gws {
				if c, a := g.Calls(), g.Active(); c != 50 || a != 0 {
					t.Errorf("gateway %d: %d calls, %d not ended; want 50 and 0", i+1, c, a)
				}
			}
		})
	}
}
