package integration

import (
	"strings"
	"testing"
	"time"
)

// probeYAML is the cluster nodes' configuration for the probing tests:
// keepalives every second to every destination (ds_probing_mode 1), a
// destination goes inactive after two unanswered keepalives and active after
// two answered ones, and a keepalive waits 1 s for its reply.
func probeYAML() string {
	return withFRTimer(nodeYAML("stateful", `ds_ping_interval: 1
ds_probing_mode: 1
ds_probing_threshold: 2
ds_inactive_threshold: 2`, `- name: all
  dispatch: {set: 1, alg: 4}`), time.Second)
}

// prober maps the source address of a gateway's OPTIONS to the node that
// sent it (nodes keepalive from their SIP socket); unknown sources fail the
// test.
func prober(t *testing.T, nodes []*Node, from string) int {
	t.Helper()
	for i, n := range nodes {
		if n.SIPAddr == from {
			return i
		}
	}
	t.Fatalf("OPTIONS from %s, which is no node's SIP address", from)
	return -1
}

// probersSince returns, per gateway, the nodes that sent it OPTIONS since t0
// and how many.
func probersSince(t *testing.T, nodes []*Node, gws []*Gateway, t0 time.Time) []map[int]int {
	t.Helper()
	out := make([]map[int]int, len(gws))
	for i, g := range gws {
		out[i] = map[int]int{}
		for from, c := range g.OptionsFrom(t0) {
			out[i][prober(t, nodes, from)] += c
		}
	}
	return out
}

// docs/cluster.md#probing-in-a-cluster: every gateway is probed by one live
// node, not by all three; the leader commits the results so a silent gateway
// goes down on every node; when the node probing a gateway is killed, another
// takes over.
func TestClusterProbeOneNodePerGateway(t *testing.T) {
	ip := nextIP()
	var gws []*Gateway
	var uris []string
	for range 6 {
		g := startGateway(t, ip, answer200)
		gws, uris = append(gws, g), append(uris, g.URI())
	}
	nodes := startCluster(t, probeYAML(), listFile(1, gws...), uris...)
	var leader int
	waitFor(t, "one raft leader all nodes agree on", 15*time.Second, func() bool {
		leader = leaderOf(nodes)
		return leader >= 0
	})

	// (a) Once gossip has settled (each gateway probed by one node for 3 s
	// in a row), a window of several intervals: each gateway hears from
	// exactly one node, about once per interval.
	waitFor(t, "each gateway to be probed by exactly one node for 3 s", 30*time.Second, func() bool {
		for _, p := range probersSince(t, nodes, gws, time.Now().Add(-3*time.Second)) {
			if len(p) != 1 {
				return false
			}
		}
		return true
	})
	const window = 8 * time.Second
	t0 := time.Now()
	time.Sleep(window) // the observation window itself, not a synchronisation
	probers := probersSince(t, nodes, gws, t0)
	intervals := window.Seconds() // ds_ping_interval 1 s
	limit := int(1.5*intervals) + 2
	total := 0
	owner := make([]int, len(gws))
	shares := map[int]int{}
	for i, p := range probers {
		if len(p) != 1 {
			t.Errorf("gateway %d got OPTIONS from nodes %v over %v, want exactly one node", i+1, p, window)
		}
		for n, c := range p {
			owner[i] = n
			shares[n]++
			total += c
			if c > limit || c < int(intervals/2) {
				t.Errorf("gateway %d got %d OPTIONS from node %d over %v (%v intervals), want between %d and %d",
					i+1, c, n+1, window, intervals, int(intervals/2), limit)
			}
		}
	}
	t.Logf("over %v: %d OPTIONS to %d gateways (%.2f per gateway per interval; every node probing all would be 3); gateways per node %v (leader n%d)",
		window, total, len(gws), float64(total)/float64(len(gws))/intervals, shares, leader+1)
	if t.Failed() {
		return
	}
	relayed := metric(t, nodes[leader], `sipdispatch_cluster_probe_reports_total{event="proposed_relayed"}`)
	local := metric(t, nodes[leader], `sipdispatch_cluster_probe_reports_total{event="proposed_local"}`)
	t.Logf("leader n%d proposed %v own and %v gossiped results", leader+1, local, relayed)
	for i := range nodes {
		if i != leader && shares[i] > 0 && relayed == 0 {
			t.Errorf("follower n%d probes %d gateways but the leader proposed no gossiped result", i+1, shares[i])
		}
	}

	// (b) A gateway that stops answering goes inactive on all three nodes:
	// whoever probes it, the leader commits the transition.
	deafGW := 0
	gws[deafGW].SetMode(deaf)
	start := time.Now()
	for _, n := range nodes {
		waitFor(t, "the deaf gateway to be inactive on "+n.APIAddr, 30*time.Second, func() bool {
			f, _ := destStatesErr(n)
			return strings.HasPrefix(f[uris[deafGW]], "I")
		})
	}
	t.Logf("deaf gateway (probed by n%d) inactive on all nodes after %v", owner[deafGW]+1, time.Since(start))
	gws[deafGW].SetMode(answer200)
	for _, n := range nodes {
		waitFor(t, "the gateway to be active again on "+n.APIAddr, 30*time.Second, func() bool {
			f, _ := destStatesErr(n)
			return strings.HasPrefix(f[uris[deafGW]], "A")
		})
	}

	// (c) kill -9 of the node probing a gateway: another node takes it over
	// once gossip declares the node dead, and only one does. The gateway is
	// one the leader probes when there is one, so that a new leader must
	// commit its results too.
	victim := 1
	for i, n := range owner {
		if n == leader {
			victim = i
			break
		}
	}
	killed := owner[victim]
	var survivors []*Node
	for i, n := range nodes {
		if i != killed {
			survivors = append(survivors, n)
		}
	}
	nodes[killed].Kill()
	start = time.Now()
	next := -1
	waitFor(t, "another node to probe the killed node's gateway", 45*time.Second, func() bool {
		for n := range probersSince(t, nodes, gws[victim:victim+1], start)[0] {
			if n != killed {
				next = n
				return true
			}
		}
		return false
	})
	t.Logf("kill -9 of n%d (leader: %v): n%d probes its gateway %v later", killed+1, killed == leader, next+1, time.Since(start))
	waitFor(t, "every gateway to be probed by exactly one survivor for 3 s", 45*time.Second, func() bool {
		for _, p := range probersSince(t, nodes, gws, time.Now().Add(-3*time.Second)) {
			if len(p) != 1 || p[killed] > 0 {
				return false
			}
		}
		return true
	})
	shares = map[int]int{}
	for _, p := range probersSince(t, nodes, gws, time.Now().Add(-3*time.Second)) {
		for n := range p {
			shares[n]++
		}
	}
	t.Logf("gateways per node after the kill: %v", shares)
	// The survivors still commit keepalive transitions (a new leader, if
	// the killed node led).
	gws[victim].SetMode(deaf)
	start = time.Now()
	for _, n := range survivors {
		waitFor(t, "the taken-over gateway to go inactive on "+n.APIAddr, 45*time.Second, func() bool {
			f, _ := destStatesErr(n)
			return strings.HasPrefix(f[uris[victim]], "I")
		})
	}
	t.Logf("the taken-over gateway, turned deaf, inactive on both survivors after %v", time.Since(start))
}
