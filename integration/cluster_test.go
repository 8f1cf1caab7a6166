package integration

import (
	"fmt"
	"maps"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// clusterYAML turns a nodeYAML configuration into cluster node i's: its own
// name, gossip and raft on gossip and raft (host:port), joining join (empty
// for the first node), three nodes to bootstrap. Keys of a "cluster:" block
// that ends base (withClusterKeys) join the block written here.
func clusterYAML(base string, i int, gossip, raft, join string) string {
	joins := "[]"
	if join != "" {
		joins = "[" + join + "]"
	}
	base = strings.Replace(base, "name: n1", fmt.Sprintf("name: n%d", i), 1)
	base, extra, _ := strings.Cut(base, "\ncluster:\n")
	return base + "\n" + fmt.Sprintf(`cluster:
  enabled: true
%s  gossip: {bind: "%s", join: %s}
  raft: {bind: "%s", bootstrap_expect: 3}
`, extra, gossip, joins, raft)
}

// startCluster starts three sipdispatch processes on distinct addresses that
// form one cluster (nodes 2 and 3 join node 1's gossip address) with the same
// list, and waits until every node lists the list's destinations: the first
// leader has committed them and each node has applied them.
func startCluster(t *testing.T, base, list string, uris ...string) []*Node {
	t.Helper()
	return startClusterRaft(t, "", base, list, uris...)
}

// startClusterRaft is startCluster with more cluster.raft keys, raftKeys
// ("k: v, k: v") added to every node's raft map.
func startClusterRaft(t *testing.T, raftKeys, base, list string, uris ...string) []*Node {
	t.Helper()
	var nodes []*Node
	join := ""
	for i := 1; i <= 3; i++ {
		ip := nextIP()
		gossip := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
		raft := fmt.Sprintf("%s:%d", ip, freePort(t, ip))
		yaml := clusterYAML(base, i, gossip, raft, join)
		if raftKeys != "" {
			yaml = strings.Replace(yaml, "bootstrap_expect: 3}", "bootstrap_expect: 3, "+raftKeys+"}", 1)
		}
		nodes = append(nodes, startNodeAt(t, ip, yaml, list))
		if join == "" {
			join = gossip
		}
	}
	for _, n := range nodes {
		waitFor(t, "node "+n.APIAddr+" to list the committed sets", 30*time.Second, func() bool {
			f, _ := destStatesErr(n)
			for _, u := range uris {
				if _, ok := f[u]; !ok {
					return false
				}
			}
			return true
		})
	}
	return nodes
}

// destStatesErr is destStates that reports a failed call as empty state, for
// polling a node that is still starting.
func destStatesErr(n *Node) (flags map[string]string, load map[string]int) {
	flags, load, _ = listStates(n)
	return flags, load
}

// A gateway set inactive through one node's API is inactive on every node.
func TestClusterSetStateReplicated(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	nodes := startCluster(t, nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, gws...), gws[0].URI(), gws[1].URI())

	start := time.Now()
	rpc(t, nodes[0], nil, "dispatcher.set_state", "ip", 1, gws[0].URI())
	for _, n := range nodes {
		waitFor(t, "gateway 1 inactive on "+n.APIAddr, 10*time.Second, func() bool {
			f, _ := destStatesErr(n)
			return strings.HasPrefix(f[gws[0].URI()], "I") && strings.HasPrefix(f[gws[1].URI()], "A")
		})
	}
	t.Logf("set_state on node 1 visible on all three nodes after %v", time.Since(start))

	// A call through another node avoids the inactive gateway.
	if code, out := sipp(t, 30*time.Second, callerArgs(nodes[2], 4, 4, 0)...); code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	if gws[0].Calls() != 0 || gws[1].Calls() != 4 {
		t.Fatalf("calls: inactive gateway %d, active %d; want 0 and 4", gws[0].Calls(), gws[1].Calls())
	}
}

// Algorithm 10, with either load_replication: the load of calls held
// through node 1 shows on every node, split evenly, and returns to 0
// everywhere after the BYEs; so it does after calls through a follower whose
// BYE comes right after the 200 (it must not overtake its LoadAdd and leave
// an entry behind; actors' TestAsyncLoadCommandsWaitForTheirAdd forces that
// race), and no commit fails while the quorum holds.
func TestClusterCallLoadReplicated(t *testing.T) {
	for _, mode := range []string{"sync", "async"} {
		t.Run(mode, func(t *testing.T) {
			ip := nextIP()
			gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
			cfg := withClusterKeys(withFRTimer(nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), 2*time.Second), "load_replication: "+mode)
			nodes := startCluster(t, cfg, listFile(1, gws...), gws[0].URI(), gws[1].URI())

			const calls = 20
			uac := startSIPp(t, 45*time.Second, callerArgs(nodes[0], calls, 20, 5*time.Second)...)
			for _, n := range nodes {
				waitFor(t, "all calls' load on "+n.APIAddr, 20*time.Second, func() bool {
					_, load := destStatesErr(n)
					return load[gws[0].URI()]+load[gws[1].URI()] == calls
				})
			}
			// The same entries everywhere; least-loaded split them evenly.
			_, want := destStatesErr(nodes[0])
			for _, n := range nodes[1:] {
				if _, got := destStatesErr(n); !maps.Equal(got, want) {
					t.Errorf("load on %s %v, node 1 %v", n.APIAddr, got, want)
				}
			}
			if want[gws[0].URI()] != calls/2 {
				t.Errorf("load %v during the calls, want %d on each gateway", want, calls/2)
			}
			if code, out := uac.wait(t); code != 0 {
				t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
			}
			for _, n := range nodes {
				waitFor(t, "load to return to 0 on "+n.APIAddr, 10*time.Second, func() bool {
					_, load := destStatesErr(n)
					return len(load) == 2 && load[gws[0].URI()] == 0 && load[gws[1].URI()] == 0
				})
			}

			var leader int
			waitFor(t, "a raft leader", 15*time.Second, func() bool { leader = leaderOf(nodes); return leader >= 0 })
			follower := nodes[(leader+1)%3]
			if code, out := sipp(t, 60*time.Second, callerArgs(follower, 100, 50, 0)...); code != 0 {
				t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
			}
			failures := `sipdispatch_load_commit_failures_total{mode="` + mode + `"}`
			for _, n := range nodes {
				waitFor(t, "no entry left on "+n.APIAddr, 10*time.Second, func() bool { return totalLoad(n) == 0 })
				if f := metric(t, n, failures); f != 0 {
					t.Errorf("%s: %v failed commits with a quorum", n.APIAddr, f)
				}
			}
		})
	}
}

// A call's load entry, added through node 1, is removed by its BYE through
// node 2 (no Record-Route, so the BYE may take any node), on every node.
func TestClusterByeThroughAnotherNode(t *testing.T) {
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	base := strings.Replace(nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), "record_route: true", "record_route: false", 1)
	nodes := startCluster(t, base, listFile(1, gw), gw.URI())

	const callID = "cluster-bye-1"
	ok := sendRaw(t, nodes[0].SIPAddr, invite(callID, ""))
	if l := firstLine(ok); l != "SIP/2.0 200 OK" {
		t.Fatalf("INVITE through node 1: %s", l)
	}
	for _, n := range nodes {
		waitFor(t, "the call's load on "+n.APIAddr, 10*time.Second, func() bool {
			_, load := destStatesErr(n)
			return load[gw.URI()] == 1
		})
	}
	to := headerValue(ok, "To")
	if !strings.Contains(to, "tag=") {
		t.Fatalf("200 without a To tag: %q", to)
	}
	bye := "BYE sip:gw@" + gw.Addr + " SIP/2.0\nVia: SIP/2.0/UDP %LOCAL%;branch=z9hG4bK-" + callID + "-bye;rport\n" +
		"From: <sip:alice@example.com>;tag=a1\nTo: " + to + "\nCall-ID: " + callID + "\nCSeq: 2 BYE\n" +
		"Max-Forwards: 70\nContent-Length: 0\n\n"
	if l := firstLine(sendRaw(t, nodes[1].SIPAddr, bye)); l != "SIP/2.0 200 OK" {
		t.Fatalf("BYE through node 2: %s", l)
	}
	for _, n := range nodes {
		waitFor(t, "load to return to 0 on "+n.APIAddr, 10*time.Second, func() bool {
			_, load := destStatesErr(n)
			v, ok := load[gw.URI()]
			return ok && v == 0
		})
	}
	if gw.Active() != 0 {
		t.Errorf("gateway still has %d active calls", gw.Active())
	}
}

// headerValue returns the value of the first header name in a SIP message.
func headerValue(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// load_replication sync: with two of three nodes gone the survivor cannot
// commit a call's load entry, so an algorithm-10 INVITE gets 503 with
// Retry-After after a wait bounded by fr_timer, and never reaches the gateway.
func TestClusterNoQuorumAnswers503(t *testing.T) {
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	base := withFRTimer(nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), 2*time.Second)
	nodes := startCluster(t, base, listFile(1, gw), gw.URI())
	if l := firstLine(sendRaw(t, nodes[0].SIPAddr, invite("quorum-ok", ""))); l != "SIP/2.0 200 OK" {
		t.Fatalf("INVITE with a quorum: %s", l)
	}
	if c := readyz(nodes[0]); c != 200 {
		t.Fatalf("/readyz with a quorum: %d, want 200", c)
	}
	nodes[1].Stop()
	nodes[2].Stop()
	calls := gw.Calls()
	start := time.Now()
	resp := sendRaw(t, nodes[0].SIPAddr, invite("quorum-lost", ""))
	waited := time.Since(start)
	if l := firstLine(resp); !strings.HasPrefix(l, "SIP/2.0 503") {
		t.Fatalf("INVITE without a quorum: %s, want 503", l)
	}
	if headerValue(resp, "Retry-After") == "" {
		t.Errorf("503 without Retry-After:\n%s", resp)
	}
	if gw.Calls() != calls {
		t.Errorf("the gateway got the INVITE whose load entry did not commit")
	}
	t.Logf("503 after %v without a quorum (fr_timer 2s)", waited)
	// Without a leader the node is not ready
	// (docs/operations.md#http-endpoints), though it still answers.
	waitFor(t, "/readyz to report the lost leader", 20*time.Second, func() bool { return readyz(nodes[0]) == 503 })
}

// readyz returns the status code of the node's GET /readyz, 0 on no answer.
func readyz(n *Node) int {
	resp, err := http.Get("http://" + n.APIAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The operator's view of a cluster: `sipdispatch members` and `raft` on any
// node, and the raft/gossip series on /metrics.
func TestClusterMembersRaftAndMetrics(t *testing.T) {
	ip := nextIP()
	gw := startGateway(t, ip, answer200)
	nodes := startCluster(t, nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, gw), gw.URI())

	admin := func(n *Node, cmd string) string {
		out, err := exec.Command(binary, cmd, "-api", "http://"+n.APIAddr).CombinedOutput()
		if err != nil {
			t.Fatalf("sipdispatch %s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	waitFor(t, "three alive members seen from node 3", 15*time.Second, func() bool {
		return strings.Count(admin(nodes[2], "members"), " alive ") == 3
	})
	leaders := 0.0
	for _, n := range nodes {
		out := admin(n, "raft")
		if !strings.Contains(out, "leader n") || strings.Count(out, "Voter") != 3 {
			t.Errorf("raft on %s: want a named leader and three voters:\n%s", n.APIAddr, out)
		}
		leaders += metric(t, n, "sipdispatch_raft_leader ")
		if got := metric(t, n, `sipdispatch_gossip_members{state="alive"}`); got != 3 {
			t.Errorf("%s: sipdispatch_gossip_members{alive} = %v, want 3", n.APIAddr, got)
		}
	}
	if leaders != 1 {
		t.Errorf("sipdispatch_raft_leader summed over the nodes = %v, want exactly 1", leaders)
	}
	// A state change proposed through node 2 is timed there.
	before := metric(t, nodes[1], "sipdispatch_raft_commit_seconds_count")
	rpc(t, nodes[1], nil, "dispatcher.set_state", "i", 1, gw.URI())
	if after := metric(t, nodes[1], "sipdispatch_raft_commit_seconds_count"); after <= before {
		t.Errorf("raft commit latency count %v → %v after a set_state, want it to grow", before, after)
	}
}

// raftState returns a node's raft STATE and LEADER_ID, empty if it does not answer.
func raftState(n *Node) (state, leader string) {
	var r struct{ STATE, LEADER_ID string }
	if rpcErr(n, &r, "cluster.raft") != nil {
		return "", ""
	}
	return r.STATE, r.LEADER_ID
}

// leaderOf returns the index in nodes of the one that reports itself raft
// leader with every other node agreeing, -1 if there is none yet.
func leaderOf(nodes []*Node) int {
	leader, name := -1, ""
	for i, n := range nodes {
		if st, _ := raftState(n); st == "Leader" {
			if leader >= 0 {
				return -1
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1
	}
	for _, n := range nodes {
		_, id := raftState(n)
		if name == "" {
			name = id
		}
		if id == "" || id != name {
			return -1
		}
	}
	return leader
}

// totalLoad is the DLGLOAD summed over a node's destinations, -1 on no answer.
func totalLoad(n *Node) int {
	_, load, err := listStates(n)
	if err != nil {
		return -1
	}
	sum := 0
	for _, v := range load {
		sum += v
	}
	return sum
}

// indexOf returns n's index in nodes, -1 if absent.
func indexOf(nodes []*Node, n *Node) int {
	for i, m := range nodes {
		if m == n {
			return i
		}
	}
	return -1
}
