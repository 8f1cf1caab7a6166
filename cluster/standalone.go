package cluster

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// standaloneAddr is the raft address of a standalone node: its in-process
// transport never dials it, but it is stored in the raft configuration, so
// it must stay the same across restarts.
const standaloneAddr raft.ServerAddress = "standalone"

// standaloneTimings makes a lone voter elect itself soon after a restart:
// with nobody to wait for, a short heartbeat timeout costs nothing (a single
// voter's lease never lapses, as it is its own quorum).
func standaloneTimings(rc *raft.Config) {
	rc.HeartbeatTimeout = 100 * time.Millisecond
	rc.ElectionTimeout = 100 * time.Millisecond
	rc.LeaderLeaseTimeout = 100 * time.Millisecond
}

// startAlone finishes Start for a standalone node: it bootstraps raft with
// this node as the single voter on a fresh data dir, or checks that the
// existing state is this node's own, and lists the node as its only member.
func (n *Node) startAlone(hasState bool) error {
	self := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeName), Address: raft.ServerAddress(n.raftAddr)}
	if hasState {
		f := n.raft.GetConfiguration()
		if err := f.Error(); err != nil {
			return fmt.Errorf("read raft configuration: %w", err)
		}
		servers := f.Configuration().Servers
		if len(servers) != 1 || servers[0].ID != self.ID || servers[0].Suffrage != raft.Voter {
			ids := make([]string, len(servers))
			for i, s := range servers {
				ids[i] = string(s.ID)
			}
			return fmt.Errorf("data dir %s holds the raft state of servers %q, not of standalone node %q: "+
				"start it with that node name (one server) or use another data dir", n.cfg.DataDir, ids, n.cfg.NodeName)
		}
		n.log.Info("cluster: standalone node resuming from existing raft state", "data_dir", n.cfg.DataDir)
	} else {
		if err := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{self}}).Error(); err != nil {
			return fmt.Errorf("bootstrap standalone node: %w", err)
		}
		n.bootstrapped.Store(true)
		n.log.Info("cluster: standalone node bootstrapped", "data_dir", n.cfg.DataDir)
	}
	n.members.mu.Lock()
	n.members.m[n.cfg.NodeName] = Member{Name: n.cfg.NodeName, State: StateAlive, Since: time.Now(),
		RaftID: n.cfg.NodeName, RaftAddr: n.raftAddr}
	n.members.mu.Unlock()
	return nil
}
