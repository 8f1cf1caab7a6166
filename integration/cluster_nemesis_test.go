package integration

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The nemesis test: algorithm-10 calls with load_replication sync flow
// through a three-node cluster while one fault at a time hits it (kill -9
// and restart, a node cut off by iptables, the leader cut off, a restart
// while cut off, two kills in turn). A Go "phone" places the calls over plain
// UDP, to a random live node per request, as a UA behind a DNS name with
// several SRV targets would; it keeps, per call, what it could know of the
// outcome. At the end, with everything healed and every established call
// hung up, the nodes must agree on the call-load table and hold no more
// entries than there are calls whose outcome the phone could not know: any
// entry beyond those is a leak.
//
// Environment:
//   - SIPDISPATCH_NEMESIS_SEED: the seed of the fault schedule (and of the
//     phone's choices); time-based when unset, always logged so that a
//     failure can be replayed.
//   - SIPDISPATCH_NEMESIS_DURATION: how long faults are applied (Go
//     duration, default 60s: the whole test takes about 80 s when it
//     passes, 110 s when it fails, as it waits 30 s for the nodes to
//     converge).
//   - SIPDISPATCH_NEMESIS_RATE: calls per second (default 30).
//   - SIPDISPATCH_NEMESIS_FAULTS: the fault kinds to draw from, separated by
//     commas (default all: kill,cut,cut-leader,restart-cut,kill-two).
//
// `make chaos` runs it for 10 minutes per seed over several seeds.
func TestClusterNemesisCallLoad(t *testing.T) {
	needIptables(t)
	seed := nemesisSeed(t)
	dur := nemesisEnvDuration(t, "SIPDISPATCH_NEMESIS_DURATION", 60*time.Second)
	rate := nemesisEnvInt(t, "SIPDISPATCH_NEMESIS_RATE", 30)
	t.Logf("nemesis seed %d (replay: SIPDISPATCH_NEMESIS_SEED=%d), faults %v for %v, %d calls/s", seed, seed, nemesisKinds(t), dur, rate)

	ip := nextIP() // gateways and phone
	gws := []*Gateway{startGateway(t, ip, answer200), startGateway(t, ip, answer200), startGateway(t, ip, answer200)}
	var uris []string
	for _, g := range gws {
		uris = append(uris, g.URI())
	}
	nodes := startCluster(t, nemesisYAML(), listFile(1, gws...), uris...)
	waitFor(t, "one raft leader all nodes agree on", 30*time.Second, func() bool { return leaderOf(nodes) >= 0 })

	c := &nemesisCluster{nodes: nodes, down: make([]bool, len(nodes))}
	ph := &phone{ip: ip, c: c, seed: seed, stop: make(chan struct{}), genDone: make(chan struct{})}
	start := time.Now()
	ph.start(rate, int(dur.Seconds()*float64(rate))+30*rate) // the last fault may end up to ~20 s after dur
	t.Cleanup(ph.stopAndWait)                                // before the nodes stop: no call outlives the test

	// Faults, one at a time, from the test's goroutine (the harness's
	// helpers may t.Fatal). Traffic runs 2 s before the first one.
	rng := rand.New(rand.NewPCG(seed, 0x6e656d65))
	time.Sleep(2 * time.Second)
	nem := &nemesis{t: t, c: c, ph: ph, rng: rng, start: start}
	kinds := nemesisKinds(t)
	for deadline := start.Add(dur); time.Now().Before(deadline); {
		for _, k := range rng.Perm(len(kinds)) {
			if !time.Now().Before(deadline) {
				break
			}
			time.Sleep(nem.between(300*time.Millisecond, 1500*time.Millisecond))
			nem.apply(kinds[k])
		}
	}
	time.Sleep(2 * time.Second) // calls after the last fault, on a healthy cluster

	// Stop traffic and let every call end (each is bounded: INVITE tries,
	// hold, BYE tries).
	ph.stopAndWait()
	trafficEnd := time.Since(start)
	if !nem.settle(30 * time.Second) {
		t.Errorf("the cluster did not settle (every node ready, one leader) within 30 s after the traffic")
	}
	// Hang up every established call whose BYE got no 200, now that
	// everything is healed.
	swept := ph.sweepByes()

	// Wait for the nodes to converge: every node ready, the same loads
	// everywhere, and no more entries than calls of unknown outcome (when
	// the API lists entries: none but those calls').
	sum := ph.summary()
	unknownIDs := map[string]bool{}
	for _, uc := range sum.unknownCalls {
		unknownIDs[uc.id] = true
	}
	converged := within(30*time.Second, func() bool {
		loads, entries, ok := clusterLoads(nodes, uris)
		if !ok || loadDisagreement(loads, entries) != 0 {
			return false
		}
		for i, n := range nodes {
			if entries[i] > sum.unknown || readyz(n) != 200 {
				return false
			}
			if ids, ok := loadEntryIDs(n); ok && len(knownOutcome(ids, unknownIDs)) > 0 {
				return false
			}
		}
		return true
	})
	loads, entries, _ := clusterLoads(nodes, uris)
	disagreement := loadDisagreement(loads, entries)
	maxEntries := slices.Max(entries)
	leaked := max(0, maxEntries-sum.unknown)

	// Name the entries left when the API can list them.
	var named []string
	for i, n := range nodes {
		ids, ok := loadEntryIDs(n)
		if !ok {
			if i == 0 {
				t.Logf("dispatcher.load cannot list entries (Call-IDs) on this build: counting only")
			}
			break
		}
		known := knownOutcome(ids, unknownIDs)
		leaked = max(leaked, len(known))
		named = append(named, fmt.Sprintf("%s: %d entries %v, %d of them of a call with a known outcome %v",
			nameOf(nodes, n), len(ids), capList(ids, 40), len(known), capList(known, 40)))
	}

	// Report.
	for i, n := range nodes {
		st, leader := raftState(n)
		var rs struct{ LAST_INDEX, COMMIT_INDEX, APPLIED_INDEX uint64 }
		rpcErr(n, &rs, "cluster.raft")
		t.Logf("%s: readyz %d, raft %s (leader %s, last %d, commit %d, applied %d), entries %d, load per gateway %v",
			nameOf(nodes, n), readyz(n), st, leader, rs.LAST_INDEX, rs.COMMIT_INDEX, rs.APPLIED_INDEX, entries[i], loads[i])
	}
	for _, s := range named {
		t.Logf("entries left on %s", s)
	}
	var held []string
	for _, g := range gws {
		g.mu.Lock()
		for id := range g.active {
			held = append(held, id)
		}
		g.mu.Unlock()
	}
	sort.Strings(held)
	t.Logf("gateways still hold %d calls (answered, no BYE seen): %v", len(held), capList(held, 40))
	t.Logf("calls with an unknown outcome (%d):", len(sum.unknownCalls))
	for _, uc := range sum.unknownCalls {
		t.Logf("  unknown %s: %s [%s]", uc.id, uc.unknown, strings.Join(uc.history, " "))
	}
	var perNode []string
	for i, n := range nodes {
		perNode = append(perNode, fmt.Sprintf("%s=%d", nameOf(nodes, n), entries[i]))
	}
	t.Logf("nemesis summary: seed=%d duration=%v traffic=%v calls=%d established=%d rejected=%d (%d after a failover) bye200=%d (%d after the heal) unknown=%d "+
		"invite-failovers=%d bye-failovers=%d bye-via-another-node=%d faults=%d [%s] entries-left=[%s] leaked=%d disagreement=%d converged=%v",
		seed, dur, trafficEnd.Round(time.Second), sum.calls, sum.established, sum.rejected, sum.rejectedAfterFailover, sum.bye200, swept, sum.unknown,
		sum.inviteFailovers, sum.byeFailovers, sum.byeElsewhere, len(nem.faults), strings.Join(nem.faults, "; "), strings.Join(perNode, " "),
		leaked, disagreement, converged)
	t.Logf("invite finals %v, bye finals %v", sum.inviteCodes, sum.byeCodes)

	if sum.calls == 0 || sum.established == 0 {
		t.Errorf("no call was established: the harness, not the cluster, is broken")
	}
	if disagreement > 0 {
		t.Errorf("the nodes disagree on the call-load table: entries %v, loads %v", entries, loads)
	}
	if leaked > 0 {
		t.Errorf("%d call-load entries leaked: up to %d entries left on a node, only %d calls have an unknown outcome (seed %d)",
			leaked, maxEntries, sum.unknown, seed)
	}

	// Count the load commands each node logged as failed (readable once the
	// process is gone).
	var failed []string
	for _, n := range nodes {
		n.Stop()
		l := n.log.String()
		failed = append(failed, fmt.Sprintf("%s: load-remove %d, load-confirm %d", nameOf(nodes, n),
			strings.Count(l, "call=load-remove"), strings.Count(l, "call=load-confirm")))
	}
	t.Logf("dispatcher calls logged as failed: %s", strings.Join(failed, "; "))
}

// nemesisAdvertise is the one advertise address every node shares, standing
// in for a VIP or a DNS name with the three nodes behind it: each node's
// Record-Route names it, so every node takes an in-dialog request as its own.
// Nothing listens on it; the phone resolves it to a random live node.
const nemesisAdvertise = "sipdispatch-vip.test:5060"

// nemesisYAML is a stateful node with Record-Route on the shared advertise
// address, algorithm 10, fr_timer 2s and load_replication sync.
func nemesisYAML() string {
	cfg := withClusterKeys(withFRTimer(nodeYAML("stateful", "ds_hash_size: 8", `- name: all
  dispatch: {set: 1, alg: 10}`), 2*time.Second), "load_replication: sync")
	return strings.Replace(cfg, "\nproxy:", "\nadvertise: \""+nemesisAdvertise+"\"\nproxy:", 1)
}

// nemesisFaults are the fault kinds, in the order the seed permutes.
var nemesisFaults = []string{"kill", "cut", "cut-leader", "restart-cut", "kill-two"}

// nemesisKinds returns the fault kinds of SIPDISPATCH_NEMESIS_FAULTS, all
// when unset.
func nemesisKinds(t *testing.T) []string {
	t.Helper()
	s := os.Getenv("SIPDISPATCH_NEMESIS_FAULTS")
	if s == "" {
		return nemesisFaults
	}
	var out []string
	for _, k := range strings.Split(s, ",") {
		if k = strings.TrimSpace(k); !slices.Contains(nemesisFaults, k) {
			t.Fatalf("SIPDISPATCH_NEMESIS_FAULTS: unknown fault %q (want some of %v)", k, nemesisFaults)
		}
		out = append(out, k)
	}
	return out
}

func nemesisSeed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("SIPDISPATCH_NEMESIS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SIPDISPATCH_NEMESIS_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano() % 1_000_000_000)
}

func nemesisEnvDuration(t *testing.T, key string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration", key, s)
	}
	return d
}

func nemesisEnvInt(t *testing.T, key string, def int) int {
	t.Helper()
	s := os.Getenv(key)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || v <= 0 {
		t.Fatalf("%s=%q: want a positive integer", key, s)
	}
	return v
}

// within polls cond every 200 ms until it holds (true) or timeout passes
// (false); unlike waitFor it does not fail the test.
func within(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(200 * time.Millisecond)
	}
	return true
}

// clusterLoads returns each node's load per gateway URI and its number of
// call-load entries (dispatcher.load CALLS, set 1); ok is false when a node
// did not answer or does not list every URI.
func clusterLoads(nodes []*Node, uris []string) (loads []map[string]int, entries []int, ok bool) {
	ok = true
	for _, n := range nodes {
		_, load, err := listStates(n)
		calls, cerr := loadCalls(n)
		if err != nil || cerr != nil {
			ok = false
			calls = -1
		}
		for _, u := range uris {
			if _, has := load[u]; !has {
				ok = false
			}
		}
		loads, entries = append(loads, load), append(entries, calls)
	}
	return loads, entries, ok
}

// loadCalls is the number of call-load entries of set 1 (dispatcher.load).
func loadCalls(n *Node) (int, error) {
	var r struct{ SETS []struct{ ID, CALLS int } }
	if err := rpcErr(n, &r, "dispatcher.load", 1); err != nil {
		return 0, err
	}
	for _, s := range r.SETS {
		if s.ID == 1 {
			return s.CALLS, nil
		}
	}
	return 0, fmt.Errorf("dispatcher.load: no set 1")
}

// loadEntryIDs returns the Call-IDs of set 1's call-load entries if the
// node's API lists them: dispatcher.load [1, "entries"] answering
// {"SETS":[{"ID":1,...,"ENTRIES":[{"CALLID":"..."}, ...]}]}. ok is false
// when it does not (today's dispatcher.load gives counts only).
func loadEntryIDs(n *Node) (ids []string, ok bool) {
	var r struct {
		SETS []struct {
			ID      int
			ENTRIES *[]struct{ CALLID string }
		}
	}
	if err := rpcErr(n, &r, "dispatcher.load", 1, "entries"); err != nil {
		return nil, false
	}
	for _, s := range r.SETS {
		if s.ID != 1 || s.ENTRIES == nil {
			continue
		}
		ok = true
		for _, e := range *s.ENTRIES {
			ids = append(ids, e.CALLID)
		}
	}
	sort.Strings(ids)
	return ids, ok
}

// loadDisagreement is 0 when every node lists the same load on every
// gateway and the same number of entries; else the sum, over the gateways
// and the entry count, of the largest difference between two nodes.
func loadDisagreement(loads []map[string]int, entries []int) int {
	spread := func(vals []int) int { return slices.Max(vals) - slices.Min(vals) }
	d := spread(entries)
	for u := range loads[0] {
		var vals []int
		for _, l := range loads {
			vals = append(vals, l[u])
		}
		d += spread(vals)
	}
	for _, l := range loads[1:] {
		if len(l) != len(loads[0]) {
			d++
		}
	}
	return d
}

// knownOutcome returns the Call-IDs in ids that are not in unknown.
func knownOutcome(ids []string, unknown map[string]bool) []string {
	var out []string
	for _, id := range ids {
		if !unknown[id] {
			out = append(out, id)
		}
	}
	return out
}

func capList(l []string, n int) string {
	if len(l) <= n {
		return fmt.Sprint(l)
	}
	return fmt.Sprintf("%v ... (%d more)", l[:n], len(l)-n)
}

// nemesisCluster tracks which nodes are up, for the phone's choice of a
// live node; the nemesis marks a node down 0-1 s after it kills it and up
// once it answers again.
type nemesisCluster struct {
	nodes []*Node
	mu    sync.Mutex
	down  []bool // guarded by mu
}

// index returns the index of the node whose SIP address is addr, -1 if none.
func (c *nemesisCluster) index(addr net.Addr) int {
	for i, n := range c.nodes {
		if n.SIPAddr == addr.String() {
			return i
		}
	}
	return -1
}

func (c *nemesisCluster) setDown(i int, down bool) { c.mu.Lock(); c.down[i] = down; c.mu.Unlock() }

// pick returns a random up node not in tried; an up node if every up node
// was tried; any node if none is up.
func (c *nemesisCluster) pick(rng *rand.Rand, tried map[int]bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var fresh, up []int
	for i := range c.nodes {
		if !c.down[i] {
			up = append(up, i)
			if !tried[i] {
				fresh = append(fresh, i)
			}
		}
	}
	switch {
	case len(fresh) > 0:
		return fresh[rng.IntN(len(fresh))]
	case len(up) > 0:
		return up[rng.IntN(len(up))]
	}
	return rng.IntN(len(c.nodes))
}

// nemesis applies faults and records them.
type nemesis struct {
	t      *testing.T
	c      *nemesisCluster
	ph     *phone
	rng    *rand.Rand
	start  time.Time
	faults []string
}

// between is a seeded random duration in [lo, hi).
func (m *nemesis) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(m.rng.Int64N(int64(hi-lo)))
}

func (m *nemesis) name(i int) string { return fmt.Sprintf("n%d", i+1) }

// others returns the hosts of every node but i.
func (m *nemesis) others(i int) []string {
	var out []string
	for j, n := range m.c.nodes {
		if j != i {
			out = append(out, hostOf(n.APIAddr))
		}
	}
	return out
}

// kill kills node i, waits hold, restarts it and marks it up once it
// answers OPTIONS. The phone learns of the death 0-1 s after it, as DNS or
// a health check would: requests sent meanwhile go unanswered and fail over.
func (m *nemesis) kill(i int, hold time.Duration) {
	lag := m.between(0, time.Second)
	m.c.nodes[i].Kill()
	time.Sleep(lag)
	m.c.setDown(i, true)
	time.Sleep(max(0, hold-lag))
	m.c.nodes[i].Restart()
	m.c.setDown(i, false)
}

// apply runs one fault of kind to its end (everything healed and
// restarted), then waits for the cluster to settle.
func (m *nemesis) apply(kind string) {
	t := m.t
	at := time.Since(m.start)
	i := m.rng.IntN(len(m.c.nodes))
	what := ""
	switch kind {
	case "kill":
		what = "kill -9 " + m.name(i)
		m.kill(i, m.between(2*time.Second, 5*time.Second))
	case "cut", "cut-leader":
		if kind == "cut-leader" {
			if !within(30*time.Second, func() bool { i = leaderOf(m.c.nodes); return i >= 0 }) {
				t.Errorf("no leader all nodes agree on within 30 s before cutting the leader")
				m.faults = append(m.faults, fmt.Sprintf("%s skipped (no leader) @%.1fs", kind, at.Seconds()))
				return
			}
		}
		what = "cut " + m.name(i)
		if kind == "cut-leader" {
			what = "cut leader " + m.name(i)
		}
		p := cutOff(t, hostOf(m.c.nodes[i].APIAddr), m.others(i))
		time.Sleep(m.between(2*time.Second, 5*time.Second))
		p.heal()
	case "restart-cut":
		what = "cut+restart " + m.name(i)
		p := cutOff(t, hostOf(m.c.nodes[i].APIAddr), m.others(i))
		time.Sleep(m.between(1*time.Second, 2500*time.Millisecond))
		m.kill(i, m.between(500*time.Millisecond, 2*time.Second))
		time.Sleep(m.between(1*time.Second, 2500*time.Millisecond))
		p.heal()
	case "kill-two":
		j := (i + 1 + m.rng.IntN(len(m.c.nodes)-1)) % len(m.c.nodes)
		what = fmt.Sprintf("kill -9 %s then %s", m.name(i), m.name(j))
		m.kill(i, m.between(2*time.Second, 4*time.Second))
		if !within(30*time.Second, func() bool { return readyz(m.c.nodes[i]) == 200 }) {
			t.Errorf("%s not ready within 30 s of its restart", m.name(i))
		}
		m.kill(j, m.between(2*time.Second, 4*time.Second))
	default:
		t.Fatalf("unknown fault %q", kind)
	}
	took := time.Since(m.start) - at
	settleStart := time.Now()
	ok := m.settle(30 * time.Second)
	m.faults = append(m.faults, fmt.Sprintf("%s @%.1fs for %.1fs", what, at.Seconds(), took.Seconds()))
	s := m.ph.progress()
	t.Logf("fault %d: %s at %.1fs, lasted %.1fs; settled %v after %v; calls so far: %s",
		len(m.faults), what, at.Seconds(), took.Seconds(), ok, time.Since(settleStart).Round(time.Millisecond), s)
	if !ok {
		t.Errorf("the cluster did not settle (every node ready, one leader) within 30 s of %s", what)
	}
}

// settle waits until every node is ready and all agree on one leader.
func (m *nemesis) settle(timeout time.Duration) bool {
	return within(timeout, func() bool {
		for _, n := range m.c.nodes {
			if readyz(n) != 200 {
				return false
			}
		}
		return leaderOf(m.c.nodes) >= 0
	})
}

// phone places the calls: plain UDP SIP, one socket per call, each request
// to a random live node, RFC 3261 retransmissions, and failover to another
// node when a request gets no answer at all within phoneNoAnswer.
type phone struct {
	ip   string
	c    *nemesisCluster
	seed uint64

	stop     chan struct{}
	stopOnce sync.Once
	genDone  chan struct{}
	wg       sync.WaitGroup
	calls    []*phoneCall // appended by the generator only; read once genDone is closed and wg done

	started, established, rejected, byeOK, inflight atomic.Int64
}

const (
	phoneT1        = 500 * time.Millisecond
	phoneT2        = 4 * time.Second
	phoneNoAnswer  = 2 * time.Second  // no response at all: try another node
	phoneInvFinal  = 10 * time.Second // 1xx but no final: the phone gives up, outcome unknown
	phoneInvTries  = 3
	phoneByeTries  = 4
	phoneMaxHold   = 3 * time.Second
	phoneMinHold   = 200 * time.Millisecond
	phoneLingerBad = 3 * time.Second // after a failed-over INVITE's final, watch for a conflicting one
)

// start begins placing calls at rate per second, at most max of them.
func (p *phone) start(rate, max int) {
	go func() {
		defer close(p.genDone)
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for i := 0; i < max; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			c := &phoneCall{id: fmt.Sprintf("nem-%d-%06d", p.seed, i), p: p, branches: map[string]bool{}}
			p.calls = append(p.calls, c)
			p.wg.Add(1)
			p.started.Add(1)
			p.inflight.Add(1)
			rng := rand.New(rand.NewPCG(p.seed, uint64(i)+1))
			go func() {
				defer p.wg.Done()
				defer p.inflight.Add(-1)
				c.run(rng)
			}()
		}
	}()
}

// stopAndWait stops placing calls and waits for every call to end.
func (p *phone) stopAndWait() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.genDone
	p.wg.Wait()
}

func (p *phone) progress() string {
	return fmt.Sprintf("%d placed, %d established, %d rejected, %d BYE 200, %d in progress",
		p.started.Load(), p.established.Load(), p.rejected.Load(), p.byeOK.Load(), p.inflight.Load())
}

// sweepByes sends a new BYE for every established call whose BYE got no
// 200 and returns how many got one now.
func (p *phone) sweepByes() int {
	var wg sync.WaitGroup
	var ok atomic.Int64
	for i, c := range p.calls {
		if !c.established || c.byeCode == 200 {
			continue
		}
		pc, err := net.ListenPacket("udp", p.ip+":0")
		if err != nil {
			continue // stays unknown
		}
		c.pc = pc
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer pc.Close()
			c.rng = rand.New(rand.NewPCG(p.seed, uint64(i)+1<<40))
			if c.bye(c.rng, 3) {
				ok.Add(1)
				p.byeOK.Add(1)
			}
		}()
	}
	wg.Wait()
	return int(ok.Load())
}

type phoneSummary struct {
	calls, established, rejected, bye200, unknown int
	inviteFailovers, byeFailovers                 int
	byeElsewhere                                  int // BYEs answered 200 through another node than the INVITE's 2xx
	rejectedAfterFailover                         int // INVITEs rejected by a node after another gave no answer
	inviteCodes, byeCodes                         map[int]int
	unknownCalls                                  []*phoneCall
}

// summary classifies every call; call it once every call has ended.
func (p *phone) summary() phoneSummary {
	s := phoneSummary{calls: len(p.calls), inviteCodes: map[int]int{}, byeCodes: map[int]int{}}
	for _, c := range p.calls {
		s.inviteFailovers += max(0, c.inviteTries-1)
		s.byeFailovers += max(0, c.byeTries-1)
		s.inviteCodes[c.inviteCode]++
		if c.established {
			s.byeCodes[c.byeCode]++
		}
		switch u := c.outcome(); {
		case u != "":
			s.unknown++
			c.unknown = u
			s.unknownCalls = append(s.unknownCalls, c)
		case c.established:
			s.bye200++
			if c.byeNode != c.inviteNode {
				s.byeElsewhere++
			}
		default:
			s.rejected++
			if c.inviteTries > 1 {
				s.rejectedAfterFailover++
			}
		}
		if c.established {
			s.established++
		}
	}
	return s
}

// phoneCall is one call and what the phone knows of it. Only its own
// goroutine touches it until the phone has stopped.
type phoneCall struct {
	id       string
	p        *phone
	rng      *rand.Rand // the call's own, seeded by the seed and the call's number
	pc       net.PacketConn
	branches map[string]bool // every branch this call sent (INVITE and BYE)
	history  []string        // "INVITE→n2 100 200", for the report

	inviteTries int
	inviteCode  int    // first final to the INVITE, 0 none
	gotInvResp  bool   // any response to the current INVITE attempt
	unknown     string // why the outcome cannot be known, "" if it can
	established bool
	toHdr       string   // To with the gateway's tag
	route       []string // route set (Record-Route, reversed)
	target      string   // remote target (Contact URI)

	byeCSeq  int
	byeTries int
	byeCode  int // final to the current BYE, 0 none

	inviteNode, byeNode int // nodes that sent the INVITE's 2xx and the BYE's 200, -1 unknown
}

// outcome is "" when the phone knows how the call ended (rejected, or
// established and BYE answered 200), else why it cannot know.
func (c *phoneCall) outcome() string {
	switch {
	case c.unknown != "":
		return c.unknown
	case c.established && c.byeCode == 200:
		return ""
	case c.established && c.byeCode == 0:
		return "BYE never answered"
	case c.established:
		return fmt.Sprintf("BYE answered %d", c.byeCode)
	case c.inviteCode >= 300:
		return ""
	}
	return "INVITE never answered"
}

func (c *phoneCall) note(format string, args ...any) {
	c.history = append(c.history, fmt.Sprintf(format, args...))
}

func (c *phoneCall) run(rng *rand.Rand) {
	c.rng = rng
	pc, err := net.ListenPacket("udp", c.p.ip+":0")
	if err != nil {
		c.unknown = "phone socket: " + err.Error()
		return
	}
	c.pc = pc
	defer pc.Close()
	if !c.invite(rng) {
		return
	}
	hold := phoneMinHold + time.Duration(rng.Int64N(int64(phoneMaxHold-phoneMinHold)))
	c.readUntil(time.Now().Add(hold), func() bool { return false })
	if c.bye(rng, 2) {
		c.p.byeOK.Add(1)
	}
}

// invite runs the INVITE, failing over to another node while one gives no
// answer at all; true when the call is established.
func (c *phoneCall) invite(rng *rand.Rand) bool {
	tried := map[int]bool{}
	for attempt := 0; attempt < phoneInvTries && c.inviteCode == 0 && !c.established; attempt++ {
		i := c.p.c.pick(rng, tried)
		tried[i] = true
		c.inviteTries++
		branch := fmt.Sprintf("z9hG4bK-%s-i%d", c.id, attempt)
		c.branches[branch] = true
		msg := strings.Replace(invite(c.id, "70"), "branch=z9hG4bK-"+c.id+";", "branch="+branch+";", 1)
		c.note("INVITE→n%d", i+1)
		c.gotInvResp = false
		c.transact(c.p.c.nodes[i].SIPAddr, msg, true, func() bool { return c.inviteCode != 0 || c.established })
		if c.inviteCode == 0 && !c.established {
			if c.gotInvResp {
				c.unknown = fmt.Sprintf("INVITE via n%d: provisional, no final within %v", i+1, phoneInvFinal)
				return false
			}
			c.note("silent")
		}
	}
	if c.inviteCode == 0 && !c.established {
		c.unknown = fmt.Sprintf("INVITE never answered (%d tries)", c.inviteTries)
		return false
	}
	if c.inviteTries > 1 && !c.established {
		// A node that was only slow may still answer the earlier attempt.
		c.readUntil(time.Now().Add(phoneLingerBad), func() bool { return false })
	}
	if c.established {
		c.p.established.Add(1)
	} else {
		c.p.rejected.Add(1)
	}
	return c.established
}

// bye ends the call with a BYE of CSeq cseq, failing over to another node
// while one gives no answer; true on a 200.
func (c *phoneCall) bye(rng *rand.Rand, cseq int) bool {
	c.byeCSeq, c.byeCode = cseq, 0
	tried := map[int]bool{}
	for attempt := 0; attempt < phoneByeTries && c.byeCode == 0; attempt++ {
		i := c.p.c.pick(rng, tried)
		tried[i] = true
		c.byeTries++
		branch := fmt.Sprintf("z9hG4bK-%s-b%d-%d", c.id, cseq, attempt)
		c.branches[branch] = true
		c.note("BYE%d→n%d", cseq, i+1)
		c.transact(c.p.c.nodes[i].SIPAddr, c.inDialog("BYE", branch, cseq), false, func() bool { return c.byeCode != 0 })
		if c.byeCode == 0 {
			c.note("silent")
		}
	}
	if c.byeCode == 0 { // a late answer to an earlier try still counts
		c.readUntil(time.Now().Add(phoneNoAnswer), func() bool { return c.byeCode != 0 })
	}
	return c.byeCode == 200
}

// inDialog builds an in-dialog request along the route set.
func (c *phoneCall) inDialog(method, branch string, cseq int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\n", method, c.target, c.pc.LocalAddr(), branch)
	for _, r := range c.route {
		fmt.Fprintf(&b, "Route: %s\r\n", r)
	}
	fmt.Fprintf(&b, "From: <sip:alice@example.com>;tag=a1\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: %d %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
		c.toHdr, c.id, cseq, method)
	return b.String()
}

// transact sends msg to addr and retransmits it (timer A for an INVITE until
// a provisional reply, timer E capped at T2 otherwise) until done holds, or
// phoneNoAnswer passes without any response, or for an INVITE with a
// provisional reply phoneInvFinal passes.
func (c *phoneCall) transact(addr, msg string, isInvite bool, done func() bool) {
	to, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return
	}
	msg = strings.ReplaceAll(msg, "%LOCAL%", c.pc.LocalAddr().String())
	if !strings.Contains(msg, "\r\n") {
		msg = strings.ReplaceAll(msg, "\n", "\r\n")
	}
	sent := time.Now()
	interval := phoneT1
	next := sent.Add(interval)
	c.pc.WriteTo([]byte(msg), to)
	provisional := false
	for !done() {
		now := time.Now()
		limit := sent.Add(phoneNoAnswer)
		if provisional {
			limit = sent.Add(phoneInvFinal)
		}
		if !now.Before(limit) {
			return
		}
		if !now.Before(next) {
			if !(isInvite && provisional) {
				c.pc.WriteTo([]byte(msg), to)
			}
			interval = min(interval*2, phoneT2)
			next = now.Add(interval)
		}
		until := next
		if limit.Before(until) {
			until = limit
		}
		seen := false
		c.readUntil(until, func() bool { seen = true; return true })
		if seen && isInvite && c.gotInvResp {
			provisional = true
		}
	}
}

// readUntil reads responses until deadline, handling each (handle), and
// calls stop after each; it returns when stop returns true.
func (c *phoneCall) readUntil(deadline time.Time, stop func() bool) {
	buf := make([]byte, 65535)
	for time.Now().Before(deadline) {
		c.pc.SetReadDeadline(deadline)
		k, from, err := c.pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if c.handle(buf[:k], from) && stop() {
			return
		}
	}
}

// handle takes one response; false if it was not one of this call's.
func (c *phoneCall) handle(b []byte, from net.Addr) bool {
	r, ok := parsePhoneResponse(b)
	if !ok || r.callID != c.id || !c.branches[r.branch] {
		return false
	}
	switch r.method {
	case "INVITE":
		if strings.HasSuffix(r.branch, fmt.Sprintf("-i%d", c.inviteTries-1)) {
			c.gotInvResp = true
		}
		switch {
		case r.code < 200:
			c.note("%d", r.code)
		case r.code < 300:
			c.note("%d", r.code)
			if !c.established {
				if c.inviteCode >= 300 {
					c.note("(2xx after %d)", c.inviteCode)
				}
				c.established, c.inviteCode, c.inviteNode = true, r.code, c.p.c.index(from)
				c.toHdr = r.msg.get("To")
				c.target = strings.Trim(strings.SplitN(r.msg.get("Contact"), ";", 2)[0], "<> ")
				var rr []string
				for _, v := range r.msg.all("Record-Route") {
					rr = append(rr, splitHeaderValues(v)...)
				}
				c.route = nil
				for i := len(rr) - 1; i >= 0; i-- {
					c.route = append(c.route, rr[i])
				}
			}
			// ACK every 2xx, end to end, through a random live node.
			i := c.p.c.pick(c.rng, nil)
			ack := c.inDialog("ACK", fmt.Sprintf("z9hG4bK-%s-ack%d", c.id, len(c.history)), 1)
			if to, err := net.ResolveUDPAddr("udp", c.p.c.nodes[i].SIPAddr); err == nil {
				c.pc.WriteTo([]byte(ack), to)
			}
			c.note("ACK→n%d", i+1)
		default:
			c.note("%d", r.code)
			if c.inviteCode == 0 && !c.established {
				c.inviteCode = r.code
			}
			// Hop-by-hop ACK of a non-2xx, to whoever sent it.
			ack := fmt.Sprintf("ACK sip:4930123@example.com SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=%s;rport\r\n"+
				"From: <sip:alice@example.com>;tag=a1\r\nTo: %s\r\nCall-ID: %s\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
				c.pc.LocalAddr(), r.branch, r.msg.get("To"), c.id)
			c.pc.WriteTo([]byte(ack), from)
		}
	case "BYE":
		if r.cseq == c.byeCSeq && r.code >= 200 {
			c.note("%d", r.code)
			if c.byeCode != 200 {
				c.byeCode, c.byeNode = r.code, c.p.c.index(from)
			}
		}
	}
	return true
}

// phoneResponse is a parsed response.
type phoneResponse struct {
	code   int
	method string // CSeq method
	cseq   int
	branch string // top Via branch
	callID string
	msg    *sipMsg
}

// parsePhoneResponse parses a response; its headers are read by parseSIP
// (the gateway's parser, which takes requests) behind a stand-in request
// line.
func parsePhoneResponse(b []byte) (*phoneResponse, bool) {
	line, rest, _ := bytes.Cut(b, []byte("\r\n"))
	r := &phoneResponse{}
	if _, err := fmt.Sscanf(string(line), "SIP/2.0 %d", &r.code); err != nil {
		return nil, false
	}
	m, ok := parseSIP(append([]byte("RESPONSE sip:phone SIP/2.0\r\n"), rest...))
	if !ok {
		return nil, false
	}
	r.msg, r.callID = m, m.get("Call-ID")
	f := strings.Fields(m.get("CSeq"))
	if len(f) != 2 {
		return nil, false
	}
	r.cseq, _ = strconv.Atoi(f[0])
	r.method = f[1]
	via := splitHeaderValues(m.get("Via"))
	if len(via) == 0 {
		return nil, false
	}
	for _, p := range strings.Split(via[0], ";") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(p), "branch="); ok {
			r.branch = v
		}
	}
	return r, true
}

// splitHeaderValues splits a header's comma-separated values, not inside <>
// or quotes.
func splitHeaderValues(v string) []string {
	var out []string
	depth, quoted, startAt := 0, false, 0
	for i, ch := range v {
		switch {
		case ch == '"':
			quoted = !quoted
		case quoted:
		case ch == '<':
			depth++
		case ch == '>':
			depth--
		case ch == ',' && depth == 0:
			out = append(out, strings.TrimSpace(v[startAt:i]))
			startAt = i + 1
		}
	}
	if s := strings.TrimSpace(v[startAt:]); s != "" {
		out = append(out, s)
	}
	return out
}
