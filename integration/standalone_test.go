package integration

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// raftIndex returns a node's raft LAST_INDEX, -1 if it does not answer.
func raftIndex(t *testing.T, n *Node) int {
	t.Helper()
	var r struct {
		LAST_INDEX int
		PEERS      []struct{ ID, SUFFRAGE string }
	}
	if err := rpcErr(n, &r, "cluster.raft"); err != nil {
		t.Fatalf("cluster.raft: %v", err)
	}
	return r.LAST_INDEX
}

// A node without a cluster section is a one-node raft on its data dir:
// kill -9 while algorithm-10 calls are held, restart on the same data dir,
// and the inactive state and every call-load entry are still there; the
// BYEs SIPp sends after the restart bring the load back to 0.
func TestStandaloneKillKeepsStateAndCallLoad(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	n := startNode(t, nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), listFile(1, gws...))
	if st, leader := raftState(n); st != "Leader" || leader != "n1" {
		t.Fatalf("standalone raft state %q leader %q, want n1 leading itself", st, leader)
	}

	const calls = 10
	uac := startSIPp(t, 90*time.Second, callerArgs(n, calls, 20, 25*time.Second)...)
	waitFor(t, "all calls' load", 20*time.Second, func() bool { return totalLoad(n) == calls })
	rpc(t, n, nil, "dispatcher.set_state", "i", 1, gws[1].URI())
	flags, load := destStates(t, n)
	if !strings.HasPrefix(flags[gws[1].URI()], "I") {
		t.Fatalf("flags before the kill: %v", flags)
	}

	n.Kill()
	start := time.Now()
	n.Restart()
	t.Logf("kill -9 and restart on the same data dir: answering OPTIONS after %v", time.Since(start))
	gotFlags, gotLoad := destStates(t, n)
	if !maps.Equal(gotFlags, flags) || !maps.Equal(gotLoad, load) {
		t.Fatalf("after kill -9 and restart: flags %v load %v, want flags %v load %v", gotFlags, gotLoad, flags, load)
	}
	if load[gws[0].URI()]+load[gws[1].URI()] != calls {
		t.Fatalf("load %v does not hold all %d calls", load, calls)
	}

	code, out := uac.wait(t)
	if code != 0 {
		t.Fatalf("sipp exit %d (a call or its BYE failed across the restart):\n%s", code, tail(out, 30))
	}
	waitFor(t, "load to return to 0", 15*time.Second, func() bool { return totalLoad(n) == 0 })
	for i, g := range gws {
		if a := g.Active(); a != 0 {
			t.Errorf("gateway %d has %d calls never ended by BYE", i+1, a)
		}
	}
}

// `sipdispatch members` and `raft` show the standalone node as the only
// member and voter. SIGTERM, one destination added to the list file, restart: the new
// destination is committed and the old ones keep their state. A restart with
// an unchanged file commits no reload.
func TestStandaloneRestartWithEditedList(t *testing.T) {
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	n := startNode(t, nodeYAML("stateful", "", `- name: all
  dispatch: {set: 1, alg: 4}`), listFile(1, gws[:2]...))
	rpc(t, n, nil, "dispatcher.set_state", "i", 1, gws[1].URI())
	for cmd, want := range map[string][]string{"members": {"n1", "alive"}, "raft": {"leader n1", "Voter"}} {
		out, err := exec.Command(binary, cmd, "-api", "http://"+n.APIAddr).CombinedOutput()
		if err != nil {
			t.Fatalf("sipdispatch %s on a standalone node: %v\n%s", cmd, err, out)
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("sipdispatch %s: no %q in\n%s", cmd, w, out)
			}
		}
	}

	n.Stop()
	n.Restart()
	if flags, _ := destStates(t, n); len(flags) != 2 || !strings.HasPrefix(flags[gws[1].URI()], "I") {
		t.Fatalf("after a plain restart: %v", flags)
	}
	n.Stop() // the log is read only while no process writes it
	if strings.Contains(n.log.String(), "committed it as a reload") {
		t.Fatalf("unchanged list file committed as a reload:\n%s", tail(n.log.String(), 20))
	}

	if err := os.WriteFile(filepath.Join(n.Dir, "dispatcher.list"), []byte(listFile(1, gws...)), 0o644); err != nil {
		t.Fatal(err)
	}
	n.Restart()
	flags, _ := destStates(t, n)
	if len(flags) != 3 || !strings.HasPrefix(flags[gws[1].URI()], "I") ||
		!strings.HasPrefix(flags[gws[0].URI()], "A") || !strings.HasPrefix(flags[gws[2].URI()], "A") {
		t.Fatalf("after a restart with a third gateway in the list: %v, want it added and gateway 2 still inactive", flags)
	}
	n.Stop()
	if !strings.Contains(n.log.String(), "differences=1") {
		t.Errorf("the reload at start is not logged with its difference count:\n%s", tail(n.log.String(), 20))
	}
}

// Stateless proxying commits nothing per call; algorithm 10 (stateful)
// commits load entries, so the same measure would see them.
func TestStandaloneCommitsPerCall(t *testing.T) {
	for _, tc := range []struct {
		mode, alg string
		perCall   bool
	}{{"stateless", "4", false}, {"stateful", "10", true}} {
		t.Run(tc.mode+"-alg"+tc.alg, func(t *testing.T) {
			ip := nextIP()
			gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
			n := startNode(t, nodeYAML(tc.mode, "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: `+tc.alg+`}`), listFile(1, gws...))
			before := raftIndex(t, n)
			const calls = 100
			if code, out := sipp(t, 60*time.Second, callerArgs(n, calls, 100, 0)...); code != 0 {
				t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
			}
			after := raftIndex(t, n)
			t.Logf("%s alg %s: %d calls, raft index %d → %d", tc.mode, tc.alg, calls, before, after)
			if !tc.perCall && after != before {
				t.Errorf("stateless calls appended %d raft entries, want none", after-before)
			}
			if tc.perCall && after == before {
				t.Errorf("algorithm-10 calls appended no raft entry")
			}
		})
	}
}

// 1,000 calls at 200/s through a standalone node, with algorithm 4 (no raft
// entry per call) and algorithm 10 (every INVITE commits a load entry before
// it is forwarded, its 2xx and BYE further entries, through raft on disk
// with fsync). SIPp's rate bounds the elapsed time, so the raft cost shows
// in the commit latency the node measures (sipdispatch_raft_commit_seconds),
// logged here with the elapsed time; nothing asserts a duration.
func TestStandaloneThousandCallsTimed(t *testing.T) {
	for _, alg := range []string{"4", "10"} {
		t.Run("alg"+alg, func(t *testing.T) {
			ip := nextIP()
			gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
			n := startNode(t, nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: `+alg+`}`), listFile(1, gws...))
			start := time.Now()
			code, out := sipp(t, 120*time.Second, callerArgs(n, 1000, 200, 0)...)
			if code != 0 {
				t.Fatalf("sipp exit %d (some calls failed):\n%s", code, tail(out, 40))
			}
			elapsed := time.Since(start)
			if c := gws[0].Calls() + gws[1].Calls(); c != 1000 {
				t.Errorf("gateways got %d calls, want 1000", c)
			}
			waitFor(t, "load to return to 0", 15*time.Second, func() bool { return totalLoad(n) == 0 })
			count := metric(t, n, "sipdispatch_raft_commit_seconds_count")
			sum := metric(t, n, "sipdispatch_raft_commit_seconds_sum")
			mean := 0.0
			if count > 0 {
				mean = sum / count * 1000
			}
			t.Logf("1000 algorithm-%s calls at 200/s: %v; %v proposals committed, mean commit %.2f ms, raft index %d",
				alg, elapsed, count, mean, raftIndex(t, n))
		})
	}
}
