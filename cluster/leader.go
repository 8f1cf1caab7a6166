package cluster

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// OnLeadership registers fn as leader-only work (expiry sweeps, committing
// probe-driven state changes). Each time this node becomes leader, after a
// raft barrier has applied everything committed before, fn runs on its own
// goroutine with a context that is cancelled when leadership is lost or the
// node closes. fn must return soon after ctx is done: the node waits for it
// before it can act as leader again. Register before Start; a later
// registration takes effect at the next leadership gain.
func (n *Node) OnLeadership(fn func(ctx context.Context)) {
	n.hmu.Lock()
	defer n.hmu.Unlock()
	n.leaderWork = append(slices.Clone(n.leaderWork), fn)
}

// monitorLeadership follows raft's reliable NotifyCh: it starts leaderLoop
// when leadership is gained and stops it, waiting for it to finish, when it is
// lost (Consul's pattern). raft blocks on NotifyCh, so it keeps draining it
// until raft has shut down.
func (n *Node) monitorLeadership() {
	defer n.wg.Done()
	var stop, done chan struct{}
	stopLeader := func() {
		if stop != nil {
			close(stop)
			<-done
			stop, done = nil, nil
		}
	}
	for {
		select {
		case isLeader := <-n.notifyCh:
			switch {
			case isLeader && stop == nil && !n.isClosed():
				stop, done = make(chan struct{}), make(chan struct{})
				go func(stop, done chan struct{}) {
					defer close(done)
					n.leaderLoop(stop)
				}(stop, done)
			case !isLeader:
				stopLeader()
			}
		case <-n.shutdownCh:
			stopLeader()
			for {
				select {
				case <-n.notifyCh:
				case <-n.raftDone:
					return
				}
			}
		}
	}
}

// leaderLoop runs while this node is leader: barrier, then the registered
// leader work, then membership reconciliation on gossip events and every
// ReconcileInterval.
func (n *Node) leaderLoop(stop chan struct{}) {
	n.log.Info("cluster: gained leadership")
	defer n.log.Info("cluster: leadership ended")
	for {
		err := n.raft.Barrier(n.cfg.ApplyTimeout).Error()
		if err == nil {
			break
		}
		n.log.Warn("cluster: leader barrier failed", "err", err)
		select {
		case <-stop:
			return
		case <-time.After(n.cfg.ReconcileInterval):
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	n.hmu.Lock()
	work := n.leaderWork
	n.hmu.Unlock()
	for _, fn := range work {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(ctx)
		}()
	}
	rec := reconciler{n: n, absent: make(map[raft.ServerID]time.Time)}
	t := time.NewTicker(n.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		rec.run(time.Now())
		select {
		case <-stop:
			return
		case <-t.C:
		case <-n.reconcileCh:
		}
	}
}

// reconciler brings the raft configuration in line with gossip membership.
type reconciler struct {
	n *Node
	// absent: servers in the configuration that gossip no longer knows at
	// all, with when the leader first noticed (for reaping).
	absent map[raft.ServerID]time.Time
}

func (rc *reconciler) config() ([]raft.Server, bool) {
	f := rc.n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		rc.n.log.Warn("cluster: reconcile: read configuration", "err", err)
		return nil, false
	}
	return f.Configuration().Servers, true
}

// run is one reconciliation pass:
//  1. remove servers whose member left gracefully, and failed ones after
//     DeadNodeReap if the remaining voters keep a quorum;
//  2. add alive members missing from the configuration (voters up to
//     MaxVoters, then non-voters) and update changed addresses;
//  3. promote alive non-voters while there are fewer than MaxVoters voters.
func (rc *reconciler) run(now time.Time) {
	n := rc.n
	self := raft.ServerID(n.cfg.NodeName)
	byID := make(map[raft.ServerID]Member)
	members := n.members.list(now, 0)
	for _, m := range members {
		if m.RaftID == "" {
			continue
		}
		if old, ok := byID[raft.ServerID(m.RaftID)]; ok && old.State == StateAlive {
			continue
		}
		byID[raft.ServerID(m.RaftID)] = m
	}
	alive := func(id raft.ServerID) bool { return id == self || byID[id].State == StateAlive }

	servers, ok := rc.config()
	if !ok {
		return
	}
	for _, s := range servers {
		if s.ID == self {
			continue
		}
		m, known := byID[s.ID]
		if known {
			delete(rc.absent, s.ID)
		}
		switch {
		case known && m.State == StateAlive:
		case known && m.State == StateLeft:
			rc.change("remove left server", s.ID, "", n.raft.RemoveServer(s.ID, 0, n.cfg.ApplyTimeout))
		default:
			since := m.Since
			if !known {
				if _, ok := rc.absent[s.ID]; !ok {
					rc.absent[s.ID] = now
				}
				since = rc.absent[s.ID]
			}
			if now.Sub(since) < n.cfg.DeadNodeReap {
				continue
			}
			if !keepsQuorum(servers, s, alive) {
				n.log.Warn("cluster: not reaping failed server: the others would lose quorum", "id", s.ID)
				continue
			}
			rc.change("reap failed server", s.ID, "", n.raft.RemoveServer(s.ID, 0, n.cfg.ApplyTimeout))
		}
	}

	if servers, ok = rc.config(); !ok {
		return
	}
	inCfg := make(map[raft.ServerID]raft.Server, len(servers))
	voters := 0
	for _, s := range servers {
		inCfg[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, m := range members {
		id := raft.ServerID(m.RaftID)
		if m.State != StateAlive || id == "" || id == self {
			continue
		}
		addr := raft.ServerAddress(m.RaftAddr)
		s, ok := inCfg[id]
		switch {
		case ok && s.Address == addr:
		case ok && s.Suffrage == raft.Voter:
			rc.change("update voter address", id, addr, n.raft.AddVoter(id, addr, 0, n.cfg.ApplyTimeout))
		case ok:
			rc.change("update non-voter address", id, addr, n.raft.AddNonvoter(id, addr, 0, n.cfg.ApplyTimeout))
		case voters < n.cfg.MaxVoters:
			if rc.change("add voter", id, addr, n.raft.AddVoter(id, addr, 0, n.cfg.ApplyTimeout)) {
				voters++
			}
		default:
			rc.change("add non-voter", id, addr, n.raft.AddNonvoter(id, addr, 0, n.cfg.ApplyTimeout))
		}
	}

	if servers, ok = rc.config(); !ok {
		return
	}
	voters = 0
	for _, s := range servers {
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	for _, s := range servers {
		if voters >= n.cfg.MaxVoters {
			break
		}
		if s.Suffrage == raft.Nonvoter && alive(s.ID) {
			if rc.change("promote non-voter", s.ID, s.Address, n.raft.AddVoter(s.ID, s.Address, 0, n.cfg.ApplyTimeout)) {
				voters++
			}
		}
	}
}

// change waits for a configuration change and logs it; it reports success.
func (rc *reconciler) change(what string, id raft.ServerID, addr raft.ServerAddress, f raft.IndexFuture) bool {
	if err := f.Error(); err != nil {
		rc.n.log.Warn("cluster: "+what+" failed", "id", id, "addr", addr, "err", err)
		return false
	}
	rc.n.log.Info("cluster: "+what, "id", id, "addr", addr)
	return true
}

// keepsQuorum reports whether removing s leaves the remaining voters with a
// quorum among themselves. Removing a non-voter never matters.
func keepsQuorum(servers []raft.Server, s raft.Server, alive func(raft.ServerID) bool) bool {
	if s.Suffrage != raft.Voter {
		return true
	}
	remaining, up := 0, 0
	for _, o := range servers {
		if o.Suffrage != raft.Voter || o.ID == s.ID {
			continue
		}
		remaining++
		if alive(o.ID) {
			up++
		}
	}
	return remaining > 0 && up >= remaining/2+1
}

// bootstrapLoop forms a brand-new cluster once BootstrapExpect members are
// alive. Only the lowest-named of them bootstraps, with all of them (up to
// MaxVoters) as voters; the others have no raft state, vote for it and
// receive the log from it. One bootstrapper means no two nodes can write
// different initial configurations as long as at most BootstrapExpect nodes
// start fresh together; before bootstrapping it also asks every peer whether
// it already has raft state or knows a leader, so a fresh node joining an
// existing cluster never bootstraps a second one.
func (n *Node) bootstrapLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RetryJoinInterval)
	defer t.Stop()
	for {
		if n.tryBootstrap() {
			return
		}
		select {
		case <-n.bootstrapCh:
		case <-t.C:
		case <-n.shutdownCh:
			return
		}
	}
}

// tryBootstrap reports true when bootstrapping is no longer this node's
// concern (done, or the node belongs to a cluster).
func (n *Node) tryBootstrap() bool {
	if _, id := n.raft.LeaderWithID(); id != "" || n.raft.LastIndex() > 0 {
		return true
	}
	var peers []Member
	for _, m := range n.members.list(time.Now(), 0) {
		if m.State != StateAlive || m.RaftID == "" {
			continue
		}
		if m.Expect != n.cfg.BootstrapExpect {
			n.log.Warn("cluster: member has a different bootstrap_expect; ignoring it for bootstrap",
				"member", m.Name, "its_expect", m.Expect, "ours", n.cfg.BootstrapExpect)
			continue
		}
		peers = append(peers, m)
	}
	if len(peers) < n.cfg.BootstrapExpect || peers[0].RaftID != n.cfg.NodeName {
		return false
	}
	for _, p := range peers[1:] {
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.TCPTimeout)
		r, err := n.fwd.call(ctx, p.RaftAddr, fwdRequest{Kind: reqStatus})
		cancel()
		if err != nil {
			n.log.Warn("cluster: bootstrap: peer status", "peer", p.Name, "err", err)
			return false
		}
		if r.Index > 0 || r.Msg != "" {
			n.log.Info("cluster: bootstrap: peer already belongs to a cluster; waiting to be added",
				"peer", p.Name, "its_last_index", r.Index, "its_leader", r.Msg)
			return true
		}
	}
	var servers []raft.Server
	for _, p := range peers[:min(len(peers), n.cfg.MaxVoters)] {
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.RaftID), Address: raft.ServerAddress(p.RaftAddr)})
	}
	err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
	switch {
	case err == nil:
		n.bootstrapped.Store(true)
		n.log.Info("cluster: bootstrapped", "voters", len(servers))
		return true
	case errors.Is(err, raft.ErrCantBootstrap):
		return true
	}
	n.log.Error("cluster: bootstrap failed", "err", err)
	return false
}
