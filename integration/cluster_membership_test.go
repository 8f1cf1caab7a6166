package integration

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// raftView is a node's cluster.raft answer.
type raftView struct {
	STATE, LEADER_ID string
	PEERS            []struct{ ID, ADDR, SUFFRAGE string }
}

// voters returns the raft IDs of the voters a node lists, nil on no answer.
func voters(n *Node) []string {
	var r raftView
	if rpcErr(n, &r, "cluster.raft") != nil {
		return nil
	}
	var ids []string
	for _, p := range r.PEERS {
		if p.SUFFRAGE == "Voter" {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// memberState returns the gossip state a node reports for member name, ""
// when it does not list it.
func memberState(n *Node, name string) string {
	var r struct {
		MEMBERS []struct{ NAME, ADDR, STATE string }
	}
	if rpcErr(n, &r, "cluster.members") != nil {
		return ""
	}
	for _, m := range r.MEMBERS {
		if m.NAME == name {
			return m.STATE
		}
	}
	return ""
}

// gossipAddr is the gossip address a node advertises for itself.
func gossipAddr(t *testing.T, n *Node, name string) string {
	t.Helper()
	var r struct{ MEMBERS []struct{ NAME, ADDR string } }
	rpc(t, n, &r, "cluster.members")
	for _, m := range r.MEMBERS {
		if m.NAME == name {
			return m.ADDR
		}
	}
	t.Fatalf("%s does not list member %s", n.APIAddr, name)
	return ""
}

// exitCode waits (bounded) for a node's process to end by itself and
// returns its exit code.
func exitCode(t *testing.T, n *Node, within time.Duration) int {
	t.Helper()
	select {
	case <-n.exited:
	case <-time.After(within):
		t.Fatalf("node %s still running %v after it was asked to leave", n.APIAddr, within)
	}
	return n.cmd.ProcessState.ExitCode()
}

// everyVoterSet waits until each node lists exactly want as its voters and
// agrees on one leader among them.
func everyVoterSet(t *testing.T, nodes []*Node, want []string, timeout time.Duration) {
	t.Helper()
	waitFor(t, fmt.Sprintf("every node to list voters %v", want), timeout, func() bool {
		for _, n := range nodes {
			got := voters(n)
			if len(got) != len(want) {
				return false
			}
			for _, id := range want {
				if !strings.Contains(","+strings.Join(got, ",")+",", ","+id+",") {
					return false
				}
			}
		}
		return leaderOf(nodes) >= 0
	})
}

// A fourth node that joins by gossip becomes a raft voter, receives the
// replicated sets and routes a hash-over-Call-ID (algorithm 0) call to the
// same gateway as every other node. Then a follower leaves with `sipdispatch
// leave`, n4 on SIGTERM (leave_on_terminate) and the leader with the
// cluster.leave RPC: each exits 0, the rest drop it from raft, list it as
// left, and keep committing.
func TestClusterMembershipJoinAndLeave(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	base := nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 0}`)
	list := listFile(1, gws...)
	nodes := startCluster(t, base, list, gws[0].URI(), gws[1].URI(), gws[2].URI())

	// The newcomer joins node 1's gossip address; nothing else names it.
	join := gossipAddr(t, nodes[0], "n1")
	ip4 := nextIP()
	g4 := fmt.Sprintf("%s:%d", ip4, freePort(t, ip4))
	r4 := fmt.Sprintf("%s:%d", ip4, freePort(t, ip4))
	start := time.Now()
	// n4 leaves on SIGTERM (cluster.leave_on_terminate); the others would
	// stay voters on a SIGTERM, as a restart must not shrink the cluster.
	n4 := startNodeAt(t, ip4, clusterYAML(base, 4, g4, r4, join)+"  leave_on_terminate: true\n", list)
	nodes = append(nodes, n4)
	everyVoterSet(t, nodes, []string{"n1", "n2", "n3", "n4"}, 60*time.Second)
	waitFor(t, "the newcomer to list the replicated sets and be ready", 30*time.Second, func() bool {
		f, _ := destStatesErr(n4)
		return len(f) == 3 && readyz(n4) == 200
	})
	t.Logf("n4 joined: a voter on all four nodes, sets replicated and ready %v after its start", time.Since(start))
	admin := func(n *Node, cmd string) (string, error) {
		out, err := exec.Command(binary, cmd, "-api", "http://"+n.APIAddr).CombinedOutput()
		return string(out), err
	}
	if out, err := admin(n4, "raft"); err != nil || strings.Count(out, "Voter") != 4 {
		t.Errorf("sipdispatch raft on n4 (err %v): want four voters:\n%s", err, out)
	}

	// Algorithm 0 hashes the Call-ID: each call goes to one gateway,
	// whichever node it enters by. The 200's Contact names the gateway.
	picked := map[string]int{}
	for c := range 6 {
		callID := fmt.Sprintf("member-hash-%d", c)
		want := ""
		for i, n := range nodes {
			resp := sendRaw(t, n.SIPAddr, invite(callID, ""))
			if l := firstLine(resp); l != "SIP/2.0 200 OK" {
				t.Fatalf("INVITE %s through n%d: %s", callID, i+1, l)
			}
			gw := headerValue(resp, "Contact")
			if want == "" {
				want = gw
				picked[gw]++
			} else if gw != want {
				t.Errorf("Call-ID %s: n%d picked %s, n1 picked %s", callID, i+1, gw, want)
			}
		}
	}
	t.Logf("algorithm 0, six Call-IDs through all four nodes: gateways by Contact %v", picked)

	// A follower leaves with the admin command.
	var leader int
	waitFor(t, "one leader all four agree on", 15*time.Second, func() bool {
		leader = leaderOf(nodes)
		return leader >= 0
	})
	follower := (leader + 1) % 3 // one of the first three: n4 leaves on SIGTERM below
	name := fmt.Sprintf("n%d", follower+1)
	start = time.Now()
	out, err := admin(nodes[follower], "leave")
	if err != nil {
		t.Fatalf("sipdispatch leave on %s: %v\n%s", name, err, out)
	}
	t.Logf("sipdispatch leave on follower %s answered after %v: %s", name, time.Since(start), strings.TrimSpace(out))
	if code := exitCode(t, nodes[follower], 30*time.Second); code != 0 {
		t.Errorf("%s exited %d after leaving, want 0", name, code)
	}
	rest := without(nodes, nodes[follower])
	var ids []string
	for _, n := range rest {
		ids = append(ids, fmt.Sprintf("n%d", indexOf(nodes, n)+1))
	}
	everyVoterSet(t, rest, ids, 30*time.Second)
	waitFor(t, name+" listed as left on every remaining node", 60*time.Second, func() bool {
		for _, n := range rest {
			if memberState(n, name) != "left" {
				return false
			}
		}
		return true
	})
	t.Logf("%s: out of raft and listed as left on the other three %v after the leave", name, time.Since(start))
	setStateSeen(t, rest, rest[len(rest)-1], "i", gws[0].URI())

	// SIGTERM to n4, which has leave_on_terminate: it leaves, then exits 0.
	start = time.Now()
	n4.cmd.Process.Signal(syscall.SIGTERM)
	if code := exitCode(t, n4, 30*time.Second); code != 0 {
		t.Errorf("n4 exited %d after SIGTERM with leave_on_terminate, want 0", code)
	}
	rest = without(rest, n4)
	ids = ids[:0]
	for _, n := range rest {
		ids = append(ids, fmt.Sprintf("n%d", indexOf(nodes, n)+1))
	}
	everyVoterSet(t, rest, ids, 30*time.Second)
	waitFor(t, "n4 listed as left on both remaining nodes", 60*time.Second, func() bool {
		return memberState(rest[0], "n4") == "left" && memberState(rest[1], "n4") == "left"
	})
	t.Logf("n4 left on SIGTERM: out of raft and listed as left on the other two %v after the signal", time.Since(start))
	setStateSeen(t, rest, rest[0], "a", gws[0].URI())

	// The leader leaves through the RPC: it removes itself and steps down,
	// and the last node, now the only voter, elects itself.
	waitFor(t, "one leader the two agree on", 15*time.Second, func() bool {
		leader = leaderOf(rest)
		return leader >= 0
	})
	lname := fmt.Sprintf("n%d", indexOf(nodes, rest[leader])+1)
	start = time.Now()
	var msg string
	if err := rpcErr(rest[leader], &msg, "cluster.leave"); err != nil {
		t.Fatalf("cluster.leave on leader %s: %v", lname, err)
	}
	if code := exitCode(t, rest[leader], 30*time.Second); code != 0 {
		t.Errorf("leader %s exited %d after leaving, want 0", lname, code)
	}
	last := without(rest, rest[leader])
	ids = nil
	for _, n := range last {
		ids = append(ids, fmt.Sprintf("n%d", indexOf(nodes, n)+1))
	}
	everyVoterSet(t, last, ids, 30*time.Second)
	t.Logf("leader %s left (%q); the last node is the only voter and leader %v after the call",
		lname, msg, time.Since(start))
	setStateSeen(t, last, last[0], "i", gws[0].URI())
	waitFor(t, lname+" listed as left on the last node", 60*time.Second, func() bool {
		return memberState(last[0], lname) == "left"
	})
}

// setStateSeen sets uri to state ("a" or "i") through via and waits until
// every node lists it so.
func setStateSeen(t *testing.T, nodes []*Node, via *Node, state, uri string) {
	t.Helper()
	rpc(t, via, nil, "dispatcher.set_state", state, 1, uri)
	flag := strings.ToUpper(state)
	for _, n := range nodes {
		waitFor(t, fmt.Sprintf("%s %s on %s", uri, flag, n.APIAddr), 15*time.Second, func() bool {
			f, _ := destStatesErr(n)
			return strings.HasPrefix(f[uri], flag)
		})
	}
}
