package integration

import (
	"fmt"
	"maps"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// partition cuts one node's address off from the others' with iptables DROP
// rules on lo, both directions. The nodes make their cluster connections
// from their bind address, so the rules match raft, forwarding and gossip;
// the test's own SIP and API traffic comes from 127.0.0.1 and still passes.
type partition struct {
	t       *testing.T
	comment string
	rules   [][]string // rule specs added and not yet removed
}

// cutOff isolates ip from others. Every rule is removed by heal or, at the
// latest, in t.Cleanup, also when the test fails.
func cutOff(t *testing.T, ip string, others []string) *partition {
	t.Helper()
	p := &partition{t: t, comment: fmt.Sprintf("sipdispatch-test-%d", os.Getpid())}
	t.Cleanup(p.heal)
	for _, o := range others {
		for _, r := range [][2]string{{ip, o}, {o, ip}} {
			spec := []string{"INPUT", "-i", "lo", "-s", r[0], "-d", r[1], "-j", "DROP", "-m", "comment", "--comment", p.comment}
			if out, err := iptables("-I", spec...); err != nil {
				t.Fatalf("iptables -I %v: %v\n%s", spec, err, out)
			}
			p.rules = append(p.rules, spec)
		}
	}
	return p
}

// heal removes every rule cutOff added; a rule that cannot be removed fails
// the test loudly, naming it.
func (p *partition) heal() {
	for _, spec := range p.rules {
		if out, err := iptables("-D", spec...); err != nil {
			p.t.Errorf("iptables -D %v: %v\n%s: remove it by hand", spec, err, out)
		}
	}
	p.rules = nil
}

func iptables(op string, spec ...string) (string, error) {
	out, err := exec.Command("iptables", append([]string{"-w", "5", op}, spec...)...).CombinedOutput()
	return string(out), err
}

// needIptables skips the test when iptables is missing or not permitted
// here; in CI (CI set), which installs it and runs as root, it fails instead.
func needIptables(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := exec.LookPath("iptables"); err != nil {
		why = "iptables is not installed"
	} else if out, err := iptables("-L", "INPUT", "-n"); err != nil {
		why = fmt.Sprintf("iptables is not permitted (needs root or CAP_NET_ADMIN): %v: %s", err, strings.TrimSpace(out))
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("partition test cannot run in CI: %s", why)
	}
	t.Skipf("partition test needs iptables on lo: %s", why)
}

func hostOf(addr string) string { return addr[:strings.LastIndexByte(addr, ':')] }

// inviteRU is invite with another Request-URI user, to select a route.
func inviteRU(user, callID string) string {
	return strings.Replace(invite(callID, ""), "INVITE sip:4930123@", "INVITE sip:"+user+"@", 1)
}

// A follower cut off from the other two.
func TestClusterPartitionFollower(t *testing.T) { testPartition(t, false) }

// The leader cut off from the other two: they must elect a new one.
func TestClusterPartitionLeader(t *testing.T) { testPartition(t, true) }

// testPartition cuts one node of three off with iptables while
// algorithm-10 calls are held through the majority. The majority keeps
// committing; the cut node cannot commit (set_state fails, an
// algorithm-10 INVITE gets 503, /readyz 503) but still routes an
// algorithm-4 call on its last state. After healing it catches up and
// commits again, and no committed call-load entry was lost.
func testPartition(t *testing.T, cutLeader bool) {
	needIptables(t)
	ip := nextIP()
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	base := withFRTimer(nodeYAML("stateful", "ds_hash_size: 8", `- name: roundrobin
  match: {ruri_user: '^rr$'}
  dispatch: {set: 1, alg: 4}
- name: load
  dispatch: {set: 1, alg: 10}`), 2*time.Second)
	nodes := startCluster(t, base, listFile(1, gws...), gws[0].URI(), gws[1].URI())

	var leader int
	waitFor(t, "one raft leader all nodes agree on", 15*time.Second, func() bool {
		leader = leaderOf(nodes)
		return leader >= 0
	})
	cut := (leader + 1) % 3
	if cutLeader {
		cut = leader
	}
	majority := without(nodes, nodes[cut])
	minority := nodes[cut]
	via := majority[0] // the held calls and their BYEs never touch the cut node
	cutName := fmt.Sprintf("n%d", cut+1)

	const calls = 10
	uac := startSIPp(t, 120*time.Second, callerArgs(via, calls, 10, 45*time.Second)...)
	for _, n := range nodes {
		waitFor(t, "all calls' load on "+n.APIAddr, 20*time.Second, func() bool { return totalLoad(n) == calls })
	}

	p := cutOff(t, hostOf(minority.APIAddr), []string{hostOf(majority[0].APIAddr), hostOf(majority[1].APIAddr)})
	cutAt := time.Now()
	t.Logf("cut %s (leader: %v) off at %s", cutName, cutLeader, cutAt.Format("15:04:05.000"))

	// The majority keeps (or, without the leader, regains) a leader.
	waitFor(t, "the majority to agree on a leader", 30*time.Second, func() bool { return leaderOf(majority) >= 0 })
	t.Logf("majority agrees on a leader %v after the cut", time.Since(cutAt))
	for _, n := range majority {
		if got := totalLoad(n); got != calls {
			t.Errorf("load on %s during the partition: %d, want %d", n.APIAddr, got, calls)
		}
	}
	start := time.Now()
	setStateSeen(t, majority, majority[1], "i", gws[0].URI())
	t.Logf("set_state through the majority committed and seen on both in %v", time.Since(start))

	// The cut node notices it has no leader.
	waitFor(t, "/readyz 503 on the cut node", 30*time.Second, func() bool { return readyz(minority) == 503 })
	t.Logf("%s reports not ready (no leader) %v after the cut", cutName, time.Since(cutAt))

	// It cannot commit: set_state fails within a bounded time.
	start = time.Now()
	err := rpcErr(minority, nil, "dispatcher.set_state", "i", 1, gws[1].URI())
	if err == nil {
		t.Fatalf("set_state through the cut node succeeded")
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("set_state through the cut node failed only after %v", took)
	}
	t.Logf("set_state through %s failed after %v: %v", cutName, time.Since(start), err)

	// An algorithm-10 INVITE needs its load entry committed: 503.
	before := gws[0].Calls() + gws[1].Calls()
	start = time.Now()
	resp := sendRaw(t, minority.SIPAddr, invite("partition-load", ""))
	if l := firstLine(resp); !strings.HasPrefix(l, "SIP/2.0 503") || headerValue(resp, "Retry-After") == "" {
		t.Fatalf("algorithm-10 INVITE through the cut node: %s, want 503 with Retry-After", l)
	}
	t.Logf("algorithm-10 INVITE through %s: 503 after %v", cutName, time.Since(start))
	// Algorithm 4 commits nothing: the cut node routes on its last state.
	if l := firstLine(sendRaw(t, minority.SIPAddr, inviteRU("rr", "partition-rr"))); l != "SIP/2.0 200 OK" {
		t.Fatalf("algorithm-4 INVITE through the cut node: %s, want 200", l)
	}
	if got := gws[0].Calls() + gws[1].Calls(); got != before+1 {
		t.Errorf("gateways saw %d new calls from the cut node, want 1 (the algorithm-4 one)", got-before)
	}
	if f, _ := destStatesErr(minority); !strings.HasPrefix(f[gws[0].URI()], "A") {
		t.Errorf("cut node lists %s as %q: it saw a change it cannot have received", gws[0].URI(), f[gws[0].URI()])
	}

	// Heal: the cut node catches up with the majority's state.
	want, _ := destStatesErr(majority[0])
	p.heal()
	healAt := time.Now()
	waitFor(t, "the healed node to catch up and be ready", 60*time.Second, func() bool {
		f, load := destStatesErr(minority)
		_, majLoad := destStatesErr(majority[0])
		return maps.Equal(f, want) && maps.Equal(load, majLoad) && readyz(minority) == 200
	})
	// The calls are still held: the healed node lists all their entries.
	if got := totalLoad(minority); got != calls {
		t.Errorf("healed %s lists a load of %d, want the %d held calls", cutName, got, calls)
	}
	t.Logf("healed %s lists the majority's sets and is ready %v after the heal (partition lasted %v)",
		cutName, time.Since(healAt), healAt.Sub(cutAt))
	if f, _ := destStatesErr(minority); !strings.HasPrefix(f[gws[1].URI()], "A") {
		t.Errorf("the set_state that failed on the cut node took effect after all: %s is %q", gws[1].URI(), f[gws[1].URI()])
	}
	waitFor(t, "a leader all three agree on", 30*time.Second, func() bool { return leaderOf(nodes) >= 0 })
	start = time.Now()
	waitFor(t, "a set_state through the healed node to commit", 30*time.Second, func() bool {
		return rpcErr(minority, nil, "dispatcher.set_state", "a", 1, gws[0].URI()) == nil
	})
	for _, n := range nodes {
		waitFor(t, "gateway 1 active again on "+n.APIAddr, 15*time.Second, func() bool {
			f, _ := destStatesErr(n)
			return strings.HasPrefix(f[gws[0].URI()], "A")
		})
	}
	t.Logf("set_state through healed %s committed and seen everywhere %v after the heal", cutName, time.Since(healAt))

	// Every held call's entry survived: all BYEs commit and every load is 0.
	code, out := uac.wait(t)
	if code != 0 {
		t.Fatalf("sipp exit %d:\n%s", code, tail(out, 30))
	}
	for _, n := range nodes {
		waitFor(t, "load to return to 0 on "+n.APIAddr, 20*time.Second, func() bool {
			_, load := destStatesErr(n)
			return len(load) == 2 && load[gws[0].URI()] == 0 && load[gws[1].URI()] == 0
		})
	}
}
