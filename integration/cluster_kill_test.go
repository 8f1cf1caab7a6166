package integration

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// killRun is one kill -9 under SIPp load: calls alg-10 calls at rate per
// second, each held for hold, sent through a follower that stays up; the
// victim is killed once killAt calls are held.
type killRun struct {
	calls, rate, killAt int
	hold                time.Duration
	leader              bool // kill the raft leader, else the other follower
	maxFailed           int  // calls SIPp may count as failed
}

// kill -9 of the raft leader during a run of 1,000 algorithm-10 calls
// through a follower: the survivors elect a new leader; INVITEs that meet no
// leader may get 503, but no established call's load entry is lost, the
// killed node, restarted while the calls are held, catches up to the same
// state, and when the BYEs start the node carrying them loses its leader
// again (a second kill, or a cut): every load still returns to 0.
func TestClusterKillLeaderUnderCallRun(t *testing.T) {
	testKillUnderCalls(t, killRun{calls: 1000, rate: 80, hold: 30 * time.Second, killAt: 300, leader: true, maxFailed: 200})
}

// kill -9 of a follower (not the one carrying the calls): the leader keeps
// its quorum, so not one call fails.
func TestClusterKillFollowerUnderCallRun(t *testing.T) {
	testKillUnderCalls(t, killRun{calls: 300, rate: 60, hold: 12 * time.Second, killAt: 150})
}

func testKillUnderCalls(t *testing.T, r killRun) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	nodes := startCluster(t, nodeYAML("stateful", "ds_hash_size: 10", `- name: all
  dispatch: {set: 1, alg: 10}`), listFile(1, gws...), gws[0].URI(), gws[1].URI())

	var leader int
	waitFor(t, "one raft leader all nodes agree on", 15*time.Second, func() bool {
		leader = leaderOf(nodes)
		return leader >= 0
	})
	followers := without(nodes, nodes[leader])
	via := followers[0] // carries the calls and their BYEs; never killed
	victim := nodes[leader]
	if !r.leader {
		victim = followers[1]
	}
	survivors := without(nodes, victim)
	gwCalls := func() (calls, active, byes int) {
		for _, g := range gws {
			calls, active, byes = calls+g.Calls(), active+g.Active(), byes+g.Byes()
		}
		return calls, active, byes
	}

	statFile := filepath.Join(t.TempDir(), "stat.csv") // SIPp's counters, every second
	args := append(withSIPpArg(callerArgs(via, r.calls, r.rate, r.hold), "-l", strconv.Itoa(r.calls)),
		"-trace_stat", "-stf", statFile, "-fd", "1")
	uac := startSIPp(t, time.Duration(r.calls/r.rate)*time.Second+r.hold+90*time.Second, args...)
	waitFor(t, fmt.Sprintf("%d calls held", r.killAt), 60*time.Second, func() bool { return totalLoad(via) >= r.killAt })
	if !r.leader {
		// Only the leader's failure interrupts commits; make sure the
		// victim still is a follower.
		if st, _ := raftState(victim); st != "Follower" {
			t.Fatalf("the victim is %q before the kill, want Follower", st)
		}
	} else if st, _ := raftState(victim); st != "Leader" {
		t.Fatalf("the victim is no longer the leader (%q) before the kill", st)
	}
	heldAtKill := totalLoad(via)
	victim.Kill()
	start := time.Now()
	waitFor(t, "the survivors to agree on a leader", 20*time.Second, func() bool { return leaderOf(survivors) >= 0 })
	failover := time.Since(start)
	t.Logf("kill -9 of %s with %d calls held: survivors agreed on leader %s after %v",
		roleName(r.leader), heldAtKill, nameOf(nodes, survivors[leaderOf(survivors)]), failover)

	// The quiet moment: every call has either reached a gateway and been
	// answered or failed at SIPp, and no BYE has been sent yet (hold outlasts
	// the INVITE phase). Then each survivor's load is exactly the calls the
	// gateways hold: an entry lost would show as less, an entry committed for
	// a call that never left the proxy as more.
	var established, failedAtQuiet int
	waitFor(t, "the INVITE phase to end before the first BYE", time.Duration(r.calls/r.rate)*time.Second+60*time.Second, func() bool {
		calls, active, byes := gwCalls()
		if byes != 0 {
			t.Fatalf("a BYE reached a gateway before the INVITE phase ended (%d calls): hold %v too short", calls, r.hold)
		}
		established, failedAtQuiet = active, sippStatCounter(statFile, "FailedCall(C)")
		return active == calls && calls+failedAtQuiet == r.calls
	})
	for _, n := range survivors {
		// The proxy forwards an INVITE once its entry applied on via; the
		// other survivor may apply it later (a race build on a busy machine
		// has been seen seconds behind).
		got := -1
		deadline := time.Now().Add(30 * time.Second)
		for got != established && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			got = totalLoad(n)
		}
		if got != established {
			var st struct{ STATE, LEADER_ID, LAST_INDEX, COMMIT_INDEX, APPLIED_INDEX any }
			_ = rpcErr(n, &st, "cluster.raft")
			_, load := destStatesErr(n)
			t.Errorf("load on %s (%s) at the quiet moment: %d %v, want %d (the calls the gateways hold); raft %+v",
				nameOf(nodes, n), n.APIAddr, got, load, established, st)
		}
	}
	if established < heldAtKill {
		t.Errorf("%d calls held after the failover, %d before the kill", established, heldAtKill)
	}
	t.Logf("quiet moment: %d calls established and held, %d failed", established, failedAtQuiet)

	// The killed node, restarted while the calls are held, lists the same
	// sets, states and loads as the survivors.
	start = time.Now()
	victim.Restart()
	waitFor(t, "the restarted node to catch up", 30*time.Second, func() bool {
		wantFlags, wantLoad := destStatesErr(via)
		flags, load := destStatesErr(victim)
		return len(load) == 2 && maps.Equal(flags, wantFlags) && maps.Equal(load, wantLoad) && readyz(victim) == 200
	})
	t.Logf("restarted node listed the same sets and loads and was ready after %v", time.Since(start))

	// The BYEs meet a cluster that cannot commit: once they have started,
	// the node carrying them loses its leader — the leader is killed, or,
	// when via leads, via is cut off from the other two. Their removals must
	// still take effect everywhere once a leader is back.
	waitFor(t, "the first BYEs", r.hold+60*time.Second, func() bool { _, _, byes := gwCalls(); return byes > 0 })
	_, _, byesBefore := gwCalls()
	fault := ""
	if cur := leaderOf(nodes); cur >= 0 && nodes[cur] != via {
		second := nodes[cur]
		second.Kill()
		waitFor(t, "BYEs while the leader is dead", 20*time.Second, func() bool { _, _, byes := gwCalls(); return byes > byesBefore })
		waitFor(t, "a new leader", 20*time.Second, func() bool { return leaderOf(without(nodes, second)) >= 0 })
		second.Restart()
		fault = "kill -9 of leader " + nameOf(nodes, second)
	} else {
		needIptables(t)
		var others []string
		for _, n := range without(nodes, via) {
			others = append(others, hostOf(n.SIPAddr))
		}
		p := cutOff(t, hostOf(via.SIPAddr), others)
		waitFor(t, "BYEs while via is cut off", 20*time.Second, func() bool { _, _, byes := gwCalls(); return byes > byesBefore+20 })
		waitFor(t, "via to notice it leads no quorum", 10*time.Second, func() bool { return readyz(via) != 200 })
		p.heal()
		fault = "iptables cut of via, the leader"
	}
	_, _, byesAfter := gwCalls()
	t.Logf("%s while the BYEs flowed: %d BYEs reached the gateways during the fault", fault, byesAfter-byesBefore)

	code, out := uac.wait(t)
	ok, failed := sippCounts(t, out)
	t.Logf("SIPp: %d calls successful, %d failed (kill -9 of %s, failover %v)", ok, failed, roleName(r.leader), failover)
	if ok+failed != r.calls {
		t.Errorf("SIPp counted %d successful + %d failed calls, want %d in all", ok, failed, r.calls)
	}
	if failed > r.maxFailed {
		t.Errorf("%d calls failed, want at most %d:\n%s", failed, r.maxFailed, tail(out, 30))
	}
	if ok != established {
		t.Errorf("%d calls successful, %d were established at the quiet moment", ok, established)
	}
	if failed == 0 && code != 0 {
		t.Errorf("sipp exit %d with no failed call:\n%s", code, tail(out, 30))
	}
	if _, active, _ := gwCalls(); active != 0 {
		t.Errorf("gateways still hold %d calls after the run", active)
	}
	for _, n := range nodes {
		waitFor(t, "load to return to 0 on "+n.APIAddr, 30*time.Second, func() bool {
			_, load := destStatesErr(n)
			return len(load) == 2 && load[gws[0].URI()] == 0 && load[gws[1].URI()] == 0
		})
	}
	if leaderOf(nodes) < 0 {
		t.Errorf("no leader agreed by all three nodes after the restart")
	}
}

// Snapshot catch-up: with a small snapshot threshold and few trailing logs,
// a follower killed while the leader commits enough state changes to compact
// its log past the follower's last index can only catch up by an
// InstallSnapshot from the leader; after it, it lists the same sets, states
// and loads.
func TestClusterRestartCatchesUpBySnapshot(t *testing.T) {
	const trailing = 8
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	nodes := startClusterRaft(t, fmt.Sprintf("snapshot_threshold: 16, snapshot_interval: 200ms, trailing_logs: %d", trailing),
		nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), listFile(1, gws...), gws[0].URI(), gws[1].URI())

	var leader int
	waitFor(t, "one raft leader all nodes agree on", 15*time.Second, func() bool {
		leader = leaderOf(nodes)
		return leader >= 0
	})
	victim := without(nodes, nodes[leader])[0]
	var st struct{ LAST_INDEX uint64 }
	rpc(t, victim, &st, "cluster.raft")
	before := st.LAST_INDEX
	victim.Kill()

	// Commit state changes through the leader until it has a snapshot far
	// enough past the victim's last entry that compaction dropped it.
	toggles := 0
	waitFor(t, "the leader to compact its log past the killed follower's index", 60*time.Second, func() bool {
		flag := "i"
		if toggles%2 == 1 {
			flag = "a"
		}
		rpc(t, nodes[leader], nil, "dispatcher.set_state", flag, 1, gws[0].URI())
		toggles++
		return lastSnapshotIndex(t, nodes[leader]) > before+trailing
	})
	// Held calls too, so the snapshot carries call-load entries.
	uac := startSIPp(t, 60*time.Second, callerArgs(nodes[leader], 10, 20, 15*time.Second)...)
	waitFor(t, "the calls' load on the leader", 20*time.Second, func() bool { return totalLoad(nodes[leader]) == 10 })
	t.Logf("follower last index %d at the kill; %d set_state commits; leader snapshot at index %d",
		before, toggles, lastSnapshotIndex(t, nodes[leader]))

	logStart := victim.log.Len() // the process is gone: nothing writes the buffer
	victim.Restart()
	waitFor(t, "the restarted follower to list the leader's sets, states and loads", 30*time.Second, func() bool {
		wantFlags, wantLoad := destStatesErr(nodes[leader])
		flags, load := destStatesErr(victim)
		return len(flags) == 2 && maps.Equal(flags, wantFlags) && maps.Equal(load, wantLoad) && totalLoad(victim) == 10
	})
	if got := lastSnapshotIndex(t, victim); got <= before {
		t.Errorf("restarted follower's newest snapshot is at index %d, not past its index %d at the kill", got, before)
	}
	victim.Stop() // so its log can be read
	if l := victim.log.String()[logStart:]; !strings.Contains(l, "Installed remote snapshot") {
		t.Errorf("the restarted follower did not install the leader's snapshot; its log:\n%s", tail(l, 40))
	}
	code, out := uac.wait(t)
	if code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
}

// lastSnapshotIndex is the highest raft index among the snapshots in a node's
// data dir (hashicorp/raft's file store names each TERM-INDEX-MILLIS), 0 if
// there is none.
func lastSnapshotIndex(t *testing.T, n *Node) uint64 {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(n.Dir, "data", "raft", "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var best uint64
	for _, e := range ents {
		var term, idx, ms uint64
		if _, err := fmt.Sscanf(e.Name(), "%d-%d-%d", &term, &idx, &ms); err == nil && !strings.HasSuffix(e.Name(), ".tmp") {
			best = max(best, idx)
		}
	}
	return best
}

// Byes returns how many BYEs reached the gateway.
func (g *Gateway) Byes() int { g.mu.Lock(); defer g.mu.Unlock(); return g.byes }

// sippStatCounter reads a counter from the last row of a SIPp -trace_stat
// file, -1 if the file or the column is not there yet.
func sippStatCounter(path, column string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return -1
	}
	hdr, row := strings.Split(lines[0], ";"), strings.Split(lines[len(lines)-1], ";")
	for i, h := range hdr {
		if h == column && i < len(row) {
			if v, err := strconv.Atoi(row[i]); err == nil {
				return v
			}
		}
	}
	return -1
}

// sippStat matches a line of SIPp's final statistics screen:
// "  Successful call   |   0   |   998   ".
var sippStat = regexp.MustCompile(`(Successful|Failed) call\s+\|\s+\d+\s+\|\s+(\d+)`)

// sippCounts returns the cumulative successful and failed calls from SIPp's
// final statistics.
func sippCounts(t *testing.T, out string) (ok, failed int) {
	t.Helper()
	found := map[string]bool{}
	for _, m := range sippStat.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.Atoi(m[2])
		if m[1] == "Successful" {
			ok = v
		} else {
			failed = v
		}
		found[m[1]] = true
	}
	if !found["Successful"] || !found["Failed"] {
		t.Fatalf("no call counts in SIPp's output:\n%s", tail(out, 40))
	}
	return ok, failed
}

// withSIPpArg returns args with flag's value set to v.
func withSIPpArg(args []string, flag, v string) []string {
	out := append([]string(nil), args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == flag {
			out[i+1] = v
			return out
		}
	}
	return append(out, flag, v)
}

// without returns nodes minus n.
func without(nodes []*Node, n *Node) []*Node {
	var out []*Node
	for _, m := range nodes {
		if m != n {
			out = append(out, m)
		}
	}
	return out
}

// nameOf is a node's name in the cluster ("n2"), from its index in nodes.
func nameOf(nodes []*Node, n *Node) string { return fmt.Sprintf("n%d", indexOf(nodes, n)+1) }

func roleName(leader bool) string {
	if leader {
		return "the leader"
	}
	return "a follower"
}
