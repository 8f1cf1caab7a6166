// Package cluster replicates sipdispatch's state between nodes: a raft log
// (hashicorp/raft; its log in cluster/logstore under the data dir) orders every state
// change, and memberlist gossip finds the nodes, detects failures and carries
// small best-effort facts such as probe results.
//
// The package knows nothing about the domain. The consumer implements
// Applier (deterministic Apply of opaque command bytes, Snapshot, Restore)
// and the cluster drives it on raft's FSM goroutine, in log order, on every
// node. Lifecycle:
//
//	n, err := cluster.New(cfg, applier, logger) // validate, allocate
//	n.OnLeadership(sweepExpired)                // leader-only loops
//	n.OnMessage(handleProbeResult)              // gossip receivers
//	err = n.Start(ctx)                          // open the raft log, bind ports, join
//	res, err := n.Propose(ctx, cmd)             // on any node
//	n.Broadcast("gw:"+uri, result)              // latest fact per name
//	n.Close()                                   // restart: stay a member
//	n.Leave(ctx)                                // or go away for good
//
// Writes. Propose works on every node. On the leader, concurrent proposals
// are packed into one raft entry (group commit); a follower forwards the
// command to the leader over the raft port (a first byte selects raft or
// forwarding, as Consul does). The result returned is the one this node's own
// Applier produced when it applied the command, so after Propose returns the
// caller's node already reflects the write. A proposal is retried, with
// backoff until the deadline, only when it certainly was not appended (no
// leader, or the contacted node is not the leader); once a leader may have
// appended it, a failure is reported as ErrLeadershipLost rather than risking
// a duplicate.
//
// Membership. The first BootstrapExpect nodes form the cluster: the
// lowest-named bootstraps raft with all of them as voters. Afterwards the
// leader reconciles raft with gossip: alive members are added (voters up to
// MaxVoters, then non-voters, promoted when a voter goes), members that left
// are removed, failed ones after DeadNodeReap if the rest keep a quorum.
//
// Standalone. With Config.Standalone the same code runs as a one-node
// cluster without any network (an in-process raft transport, no gossip, no
// listener): a lone server keeps its state in its data dir across restarts and
// runs the same Applier, Propose and leader work as a cluster member.
//
// TLS. With Config.TLS every raft-port connection (raft and forwarding) is
// mutual TLS 1.3 against one CA; see TLSConfig.
//
// Design notes and failure behaviour: docs/cluster-design.md.
package cluster
