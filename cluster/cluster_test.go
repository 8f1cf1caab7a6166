package cluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Three nodes form a cluster by gossip with bootstrap_expect=3; a fourth joins
// (after a snapshot compacted the log, so it installs the snapshot) and
// becomes a voter; a fifth beyond MaxVoters becomes a non-voter; a voter
// leaves gracefully, is removed, and the non-voter is promoted.
func TestMembership(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.MaxVoters = 4
		cfg.TrailingLogs = 4
	})
	boot := 0
	for _, n := range c.nodes {
		if n.Stats().Bootstrapped {
			boot++
			if n.cfg.NodeName != "n0" {
				t.Errorf("%s bootstrapped; only the lowest-named node should", n.cfg.NodeName)
			}
		}
	}
	if boot != 1 {
		t.Fatalf("%d nodes bootstrapped, want 1", boot)
	}
	var follower *tnode
	for _, n := range c.nodes {
		if !n.IsLeader() {
			follower = n
			break
		}
	}
	for i := range 40 {
		if got := propose(t, follower, fmt.Sprintf("k%d", i%4)); got != int64(i/4+1) {
			t.Fatalf("proposal %d on follower: result %d, want %d", i, got, i/4+1)
		}
	}
	if follower.Stats().Forwarded == 0 {
		t.Fatal("follower proposals were not forwarded")
	}
	waitConverged(t, 40, c.nodes...)
	leader := c.waitLeader()
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}

	n3 := c.add("n3", 3, func(cfg *Config) { cfg.MaxVoters = 4; cfg.TrailingLogs = 4 })
	c.waitVoters(4)
	waitConverged(t, 40, c.nodes...)
	if n3.Stats().Restores == 0 {
		t.Error("n3 caught up without installing the leader's snapshot")
	}

	n4 := c.add("n4", 3, func(cfg *Config) { cfg.MaxVoters = 4; cfg.TrailingLogs = 4 })
	waitFor(t, 20*time.Second, "n4 as non-voter", func() error {
		st, err := c.waitLeader().Raft()
		if err != nil {
			return err
		}
		if s := suffrageOf(st, "n4"); s != "Nonvoter" {
			return fmt.Errorf("n4 suffrage %q", s)
		}
		return nil
	})
	propose(t, n4, "from-n4")
	waitConverged(t, 41, c.nodes...)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := n3.Leave(ctx); err != nil {
		t.Fatalf("n3 leave: %v", err)
	}
	waitFor(t, 20*time.Second, "n3 removed and n4 promoted", func() error {
		l := c.leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		st, err := l.Raft()
		if err != nil {
			return err
		}
		if s := suffrageOf(st, "n3"); s != "" {
			return fmt.Errorf("n3 still in configuration as %s", s)
		}
		if s := suffrageOf(st, "n4"); s != "Voter" {
			return fmt.Errorf("n4 is %q", s)
		}
		return nil
	})
	waitFor(t, 10*time.Second, "n3 listed as left", func() error {
		for _, n := range c.live() {
			for _, m := range n.Members() {
				if m.Name == "n3" && m.State != StateLeft {
					return fmt.Errorf("%s lists n3 as %s", n.cfg.NodeName, m.State)
				}
			}
		}
		return nil
	})
	propose(t, c.nodes[1], "after-leave")
	waitConverged(t, 42, c.live()...)
}

// 2,000 concurrent proposals spread over all nodes: far fewer raft entries
// than commands, every proposer gets its own result, and every node ends with
// the same state.
func TestGroupCommit(t *testing.T) {
	// This test is about batching, not failover: 2,000 proposals under -race
	// with the integration tests beside it can starve a leader past
	// LocalConfig's 400 ms lease, and a leader change fails its in-flight
	// proposals. Steadier timings keep one leader through the burst.
	steady := func(c *Config) {
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 2*time.Second, 2*time.Second, time.Second
	}
	t.Run("3 nodes", func(t *testing.T) { testGroupCommit(t, 3, steady) })
	// BatchDelay makes a busy leader wait a little for more proposals.
	t.Run("1 node with batch delay", func(t *testing.T) {
		testGroupCommit(t, 1, func(c *Config) { c.BatchDelay = 2 * time.Millisecond })
	})
}

// With a BatchDelay, a lone proposal on an idle leader commits at once, while
// a paced trickle (one proposal every 20 ms, each committing long before the
// next arrives, as calls at a steady rate do) still shares entries: a batch
// that follows the last one within the delay waits for company.
func TestBatchDelayPacedProposals(t *testing.T) {
	const delay = 200 * time.Millisecond
	c := newCluster(t, 1, func(c *Config) { c.BatchDelay = delay })
	n := c.waitLeader()
	start := time.Now()
	propose(t, n, "lone")
	if took := time.Since(start); took >= delay {
		t.Fatalf("a lone proposal on an idle leader took %v: it waited for the batch delay (%v)", took, delay)
	}
	before := n.Stats()
	const total = 30
	errs := make(chan error, total)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for range total {
		<-tick.C
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, err := n.Propose(ctx, []byte("paced"))
			errs <- err
		}()
	}
	for range total {
		if err := <-errs; err != nil {
			t.Fatalf("paced proposal: %v", err)
		}
	}
	after := n.Stats()
	if cmds := after.Commands - before.Commands; cmds != total {
		t.Fatalf("applied %d commands, want %d", cmds, total)
	}
	entries := after.Entries - before.Entries
	if entries > total/3 {
		t.Fatalf("%d paced proposals took %d raft entries: batches do not wait for company", total, entries)
	}
	t.Logf("%d paced proposals in %d raft entries", total, entries)
}

func testGroupCommit(t *testing.T, nodes int, tweak func(*Config)) {
	c := newCluster(t, nodes, tweak)
	leader := c.waitLeader()
	before := leader.Stats()
	const total = 2000
	results := make([]int64, total)
	errs := make(chan error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := c.nodes[i%nodes].Propose(ctx, []byte("ctr"))
			if err != nil {
				errs <- err
				return
			}
			results[i] = res.(int64)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("propose: %v", err)
	}
	// Each proposer saw the counter value its own command produced: the
	// results are exactly 1..total.
	seen := make([]bool, total+1)
	for i, r := range results {
		if r < 1 || r > total || seen[r] {
			t.Fatalf("proposal %d: result %d out of range or duplicated", i, r)
		}
		seen[r] = true
	}
	after := leader.Stats()
	entries := after.Entries - before.Entries
	cmds := after.Commands - before.Commands
	if cmds != total {
		t.Fatalf("leader applied %d commands, want %d", cmds, total)
	}
	if entries >= total/4 {
		t.Fatalf("%d raft entries for %d commands: group commit is not batching", entries, total)
	}
	t.Logf("%d commands in %d raft entries (%.1f per entry)", cmds, entries, float64(cmds)/float64(entries))
	waitConverged(t, total, c.nodes...)
	if got := c.nodes[nodes-1].app.state().Counts["ctr"]; got != total {
		t.Fatalf("counter %d, want %d", got, total)
	}
}

// Closing the leader elects a new one and proposals keep succeeding; the old
// leader restarts from its data dir without bootstrapping again and catches up.
func TestLeaderFailoverAndRestart(t *testing.T) {
	c := newCluster(t, 3, nil)
	for i := range 30 {
		propose(t, c.nodes[i%3], "a")
	}
	old := c.waitLeader()
	if err := old.Close(); err != nil {
		t.Fatalf("close leader: %v", err)
	}
	if _, err := old.Propose(context.Background(), []byte("x")); !errorsIs(err, ErrClosed) {
		t.Fatalf("propose on closed node: %v, want ErrClosed", err)
	}
	newLeader := c.waitLeader()
	if newLeader == old {
		t.Fatal("closed node still leader")
	}
	for i, n := range c.live() {
		for j := range 10 {
			if got := propose(t, n, "a"); got != int64(31+i*10+j) {
				t.Fatalf("after failover: result %d, want %d", got, 31+i*10+j)
			}
		}
	}
	waitConverged(t, 50, c.live()...)

	back := restartNode(t, old)
	for i, n := range c.nodes {
		if n == old {
			c.nodes[i] = back
		}
	}
	waitConverged(t, 50, c.nodes...)
	if back.Stats().Bootstrapped {
		t.Fatal("restarted node bootstrapped again")
	}
	if got := propose(t, back, "a"); got != 51 {
		t.Fatalf("proposal on restarted node: %d, want 51", got)
	}
	waitConverged(t, 51, c.nodes...)
	st, err := c.waitLeader().Raft()
	if err != nil {
		t.Fatal(err)
	}
	if v := countSuffrage(st, "Voter"); v != 3 {
		t.Fatalf("%d voters after restart, want 3: %+v", v, st.Peers)
	}
}

// A single node snapshots, closes and restarts: state comes back from the
// snapshot plus the log after it.
func TestSnapshotRestoreRoundTrip(t *testing.T) {
	cfg := testConfig(t, "solo", 1)
	cfg.TrailingLogs = 2
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "leader", func() error {
		if !n.IsLeader() {
			return fmt.Errorf("not leader")
		}
		return nil
	})
	for i := range 100 {
		propose(t, n, fmt.Sprintf("k%d", i%7))
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		propose(t, n, fmt.Sprintf("tail%d", i%3))
	}
	want := n.app.state()
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	back := restartNode(t, n)
	waitFor(t, 10*time.Second, "restored state", func() error {
		got := back.app.state()
		if got.N != want.N || got.Hash != want.Hash {
			return fmt.Errorf("n=%d hash=%x, want n=%d hash=%x", got.N, got.Hash, want.N, want.Hash)
		}
		return nil
	})
	if back.app.restores != 1 || back.Stats().Restores != 1 {
		t.Fatalf("restores: app %d, node %d; want 1", back.app.restores, back.Stats().Restores)
	}
	if back.Stats().Bootstrapped {
		t.Fatal("restarted single node bootstrapped again")
	}
	waitFor(t, 10*time.Second, "leader after restart", func() error {
		if !back.IsLeader() {
			return fmt.Errorf("not leader")
		}
		return nil
	})
	if got := propose(t, back, "k0"); got != want.Counts["k0"]+1 {
		t.Fatalf("k0 after restart: %d, want %d", got, want.Counts["k0"]+1)
	}
}

// A failed (closed, not left) voter is removed only after DeadNodeReap; when
// it comes back it is added again and catches up.
func TestDeadNodeReap(t *testing.T) {
	const reap = 2 * time.Second
	c := newCluster(t, 3, func(cfg *Config) { cfg.DeadNodeReap = reap })
	propose(t, c.nodes[0], "a")
	var victim *tnode
	for _, n := range c.nodes {
		if !n.IsLeader() {
			victim = n
		}
	}
	closed := time.Now()
	if err := victim.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "failed node reaped", func() error {
		l := c.leader()
		if l == nil {
			return fmt.Errorf("no leader")
		}
		st, err := l.Raft()
		if err != nil {
			return err
		}
		if s := suffrageOf(st, victim.cfg.NodeName); s != "" {
			return fmt.Errorf("%s still %s", victim.cfg.NodeName, s)
		}
		return nil
	})
	if d := time.Since(closed); d < reap {
		t.Fatalf("reaped %v after failing, before DeadNodeReap %v", d, reap)
	}
	for _, m := range c.leader().Members() {
		if m.Name == victim.cfg.NodeName && m.State != StateDead {
			t.Fatalf("failed node listed as %s, want dead", m.State)
		}
	}
	propose(t, c.nodes[0], "a")
	back := restartNode(t, victim)
	for i, n := range c.nodes {
		if n == victim {
			c.nodes[i] = back
		}
	}
	c.waitVoters(3)
	waitConverged(t, 2, c.nodes...)
}

// The leader leaving for good removes itself; the others elect a new leader
// and keep committing with two voters.
func TestLeaderLeaves(t *testing.T) {
	c := newCluster(t, 3, nil)
	old := c.waitLeader()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := old.Leave(ctx); err != nil {
		t.Fatalf("leader leave: %v", err)
	}
	c.waitVoters(2)
	st, err := c.waitLeader().Raft()
	if err != nil {
		t.Fatal(err)
	}
	if s := suffrageOf(st, old.cfg.NodeName); s != "" {
		t.Fatalf("departed leader still in configuration as %s", s)
	}
	for _, n := range c.live() {
		propose(t, n, "b")
	}
	waitConverged(t, 2, c.live()...)
}

// Proposals keep flowing from every node while the leader closes: each one
// either succeeds or fails with a sentinel, none is applied twice (retries
// happen only when nothing was appended), every success is applied on all
// survivors, and proposals succeed again once a new leader is elected.
func TestProposeDuringFailover(t *testing.T) {
	c := newCluster(t, 3, nil)
	old := c.waitLeader()
	const workers = 6
	stop := make(chan struct{})
	var mu sync.Mutex
	succeeded := map[string]bool{}
	failures := map[string]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := c.nodes[w%3]
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				cmd := fmt.Sprintf("w%d-%d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := n.Propose(ctx, []byte(cmd))
				cancel()
				mu.Lock()
				switch {
				case err == nil:
					if res != int64(1) {
						t.Errorf("%s: result %v, want 1", cmd, res)
					}
					succeeded[cmd] = true
				case errorsIs(err, ErrLeadershipLost), errorsIs(err, ErrClosed), errorsIs(err, ErrTimeout), errorsIs(err, ErrNoLeader):
					failures[fmt.Sprint(err)]++
				default:
					t.Errorf("%s on %s: unexpected error %v", cmd, n.cfg.NodeName, err)
				}
				mu.Unlock()
				if n == old && errorsIs(err, ErrClosed) {
					return
				}
			}
		}()
	}
	countOK := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(succeeded)
	}
	waitFor(t, 10*time.Second, "proposals before failover", func() error {
		if n := countOK(); n < 100 {
			return fmt.Errorf("%d succeeded", n)
		}
		return nil
	})
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	atClose := countOK()
	waitFor(t, 20*time.Second, "proposals after failover", func() error {
		if n := countOK(); n < atClose+100 {
			return fmt.Errorf("%d succeeded since the leader closed", n-atClose)
		}
		return nil
	})
	close(stop)
	wg.Wait()
	survivors := c.live()
	want := survivors[0].app.state().N
	waitFor(t, 10*time.Second, "survivors to converge", func() error {
		want = survivors[0].app.state().N
		for _, n := range survivors {
			if s := n.app.state(); s.N != want {
				return fmt.Errorf("%s applied %d, %s %d", n.cfg.NodeName, s.N, survivors[0].cfg.NodeName, want)
			}
		}
		return nil
	})
	waitConverged(t, want, survivors...)
	st := survivors[0].app.state()
	for cmd, cnt := range st.Counts {
		if cnt != 1 {
			t.Errorf("%s applied %d times", cmd, cnt)
		}
	}
	for cmd := range succeeded {
		if st.Counts[cmd] != 1 {
			t.Errorf("%s succeeded but is not applied", cmd)
		}
	}
	t.Logf("%d succeeded, %d applied, failures: %v", len(succeeded), st.N, failures)
}

// The leader stops without handing over leadership (as in a crash): the
// others elect a new leader after the election timeout and commit again.
func TestLeaderCrash(t *testing.T) {
	c := newCluster(t, 3, nil)
	propose(t, c.nodes[0], "a")
	old := c.waitLeader()
	if err := old.shutdown(false); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.waitLeader()
	t.Logf("new leader after %v", time.Since(start))
	for _, n := range c.live() {
		propose(t, n, "a")
	}
	waitConverged(t, 3, c.live()...)
}

// With two of three nodes down the survivor has no leader and Propose fails
// with ErrNoLeader; when one node returns, the cluster recovers by itself.
func TestQuorumLost(t *testing.T) {
	c := newCluster(t, 3, nil)
	propose(t, c.nodes[0], "a")
	survivor := c.waitLeader()
	var down []*tnode
	for _, n := range c.nodes {
		if n != survivor {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
			down = append(down, n)
		}
	}
	waitFor(t, 10*time.Second, "the survivor to step down", func() error {
		if id, _ := survivor.Leader(); id != "" || survivor.IsLeader() {
			return fmt.Errorf("leader %q", id)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := survivor.Propose(ctx, []byte("lost")); !errorsIs(err, ErrNoLeader) {
		t.Fatalf("propose without quorum: %v, want ErrNoLeader", err)
	}
	back := restartNode(t, down[0])
	waitFor(t, 20*time.Second, "a leader again", func() error {
		if id, _ := back.Leader(); id == "" {
			return fmt.Errorf("no leader")
		}
		return nil
	})
	if got := propose(t, back, "a"); got != 2 {
		t.Fatalf("after recovery: %d, want 2", got)
	}
	if s := survivor.app.state(); s.Counts["lost"] != 0 {
		t.Fatal("a proposal that failed with ErrNoLeader was applied")
	}
}
