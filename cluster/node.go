package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// closingTransport is a raft transport the node closes at teardown; both
// raft.NetworkTransport and raft.InmemTransport are.
type closingTransport interface {
	raft.Transport
	Close() error
}

// Node is one cluster member: a raft peer (log in DataDir) plus a memberlist
// gossip member. Create it with New, register hooks (OnLeadership,
// OnMessage), then Start; Close (restart) or Leave (for good) at the end.
// Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	app     Applier
	log     *slog.Logger
	epoch   uint64        // random per process: tags this process's proposals
	seq     atomic.Uint64 // proposal sequence numbers
	waiters *waiters
	fsm     *fsm
	stats   counters
	members memberTable
	meta    []byte // gossiped node meta

	hmu         sync.Mutex
	msgHandlers []func(from string, payload []byte) // guarded by hmu; copied on write
	leaderWork  []func(ctx context.Context)         // guarded by hmu; copied on write

	msgCh       chan []byte   // received broadcasts awaiting delivery
	reconcileCh chan struct{} // nudges the leader's reconciler (capacity 1)
	bootstrapCh chan struct{} // nudges the bootstrapper (capacity 1)
	notifyCh    chan bool     // raft's reliable leadership notifications
	shutdownCh  chan struct{} // closed when Close starts
	raftDone    chan struct{} // closed when raft has shut down
	wg          sync.WaitGroup

	smu   sync.Mutex
	state int // guarded by smu: stateNew, stateStarted, stateClosed

	started      atomic.Bool
	bootstrapped atomic.Bool

	// Set by Start before started is true; read-only afterwards.
	raft     *raft.Raft
	stores   raftStores       // term and vote in raft.db, the log in raft-log/
	trans    closingTransport // network, or in-process when standalone
	mux      *mux
	ml       atomic.Pointer[memberlist.Memberlist]
	queue    *memberlist.TransmitLimitedQueue
	batcher  *batcher
	fwd      *fwdClient
	raftAddr string
	lock     *os.File // flock on DataDir/LOCK

	cmu   sync.Mutex
	conns map[net.Conn]struct{} // guarded by cmu: served forwarding connections; nil once closed
}

const (
	stateNew = iota
	stateStarted
	stateClosed
)

// New validates cfg and prepares a node that will drive app. Nothing is
// opened or bound until Start. log may be nil (logs are discarded).
func New(cfg Config, app Applier, log *slog.Logger) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster config: %w", err)
	}
	if app == nil {
		return nil, errors.New("cluster: nil Applier")
	}
	cfg = cfg.withDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("node", cfg.NodeName)
	var b [8]byte
	_, _ = rand.Read(b[:])
	n := &Node{
		cfg:         cfg,
		app:         app,
		log:         log,
		epoch:       binary.LittleEndian.Uint64(b[:]) | 1, // never 0, which means "nobody waits"
		waiters:     newWaiters(),
		members:     memberTable{m: make(map[string]Member)},
		msgCh:       make(chan []byte, cfg.MessageQueue),
		reconcileCh: make(chan struct{}, 1),
		bootstrapCh: make(chan struct{}, 1),
		notifyCh:    make(chan bool, 16),
		shutdownCh:  make(chan struct{}),
		raftDone:    make(chan struct{}),
		conns:       make(map[net.Conn]struct{}),
	}
	n.fsm = newFSM(app, cfg.NodeName, n.epoch, n.waiters, &n.stats, log)
	return n, nil
}

// Start opens the raft log in DataDir, binds the raft and gossip ports (a
// standalone node binds nothing and bootstraps or resumes at once), joins
// cfg.Join (retrying in the background on failure; ctx bounds only the first
// attempt) and, on a fresh data dir with BootstrapExpect set, waits in the
// background for enough members to bootstrap. It returns once the node is
// serving; it does not wait for a leader. If Start fails, everything it
// opened is released and the node is closed.
func (n *Node) Start(ctx context.Context) error {
	n.smu.Lock()
	defer n.smu.Unlock()
	if n.state != stateNew {
		return errors.New("cluster: Start called twice or after Close")
	}
	if err := n.start(); err != nil {
		n.state = stateClosed
		close(n.shutdownCh)
		if terr := n.teardown(false); terr != nil {
			n.log.Warn("cluster: cleanup after failed start", "err", terr)
		}
		return err
	}
	n.state = stateStarted
	n.started.Store(true)
	if len(n.cfg.Join) > 0 {
		if _, err := n.join(ctx, n.cfg.Join); err != nil {
			n.log.Warn("cluster: join failed, retrying in the background", "addrs", n.cfg.Join, "err", err)
			n.wg.Add(1)
			go n.retryJoin()
		}
	}
	return nil
}

// start opens and binds everything; on error, teardown releases whatever
// was set up (every step checks for nil).
func (n *Node) start() error {
	cfg := n.cfg
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	n.lock = lock

	hlog := hclogFor(n.log, "raft")
	if cfg.Standalone {
		var addr raft.ServerAddress
		addr, n.trans = raft.NewInmemTransportWithTimeout(standaloneAddr, cfg.TCPTimeout)
		n.raftAddr = string(addr)
	} else if err := n.listen(hlog); err != nil {
		return err
	}

	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 2, hlog)
	if err != nil {
		return fmt.Errorf("snapshot store: %w", err)
	}
	if n.stores, err = openRaftStores(cfg.DataDir, cfg.RaftNoSync, snaps, n.log); err != nil {
		return err
	}
	// Recent entries are read back at once (replication, apply): keep
	// them in memory rather than pread them.
	logs, err := raft.NewLogCache(512, n.stores.log)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	hasState, err := raft.HasExistingState(logs, n.stores.stable, snaps)
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeName)
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	rc.CommitTimeout = cfg.CommitTimeout
	if cfg.Standalone {
		standaloneTimings(rc)
	}
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.NotifyCh = n.notifyCh
	rc.Logger = hlog
	// A removed node keeps running as an idle non-member so that the leader
	// can add it back if it reappears in gossip; Leave closes it anyway.
	rc.ShutdownOnRemove = false
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("raft config: %w", err)
	}
	if n.raft, err = raft.NewRaft(rc, n.fsm, logs, n.stores.stable, snaps, n.trans); err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	var local net.Addr // standalone: no mux, and nothing is ever forwarded
	if n.mux != nil {
		local = n.mux.local
	}
	n.fwd = newFwdClient(local, cfg.TCPTimeout, n.clientTLS(), &n.stats)
	n.batcher = newBatcher(n.raft, cfg, &n.stats, n.shutdownCh)
	n.wg.Add(3)
	go n.batcherRun()
	go n.monitorLeadership()
	go n.deliverMessages()
	if cfg.Standalone {
		return n.startAlone(hasState)
	}
	n.mux.run()

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.NodeName
	mc.Logger = stdlogFor(n.log, "memberlist")
	host, port, _ := splitHostPort(cfg.GossipBind)
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = "", port
	if cfg.GossipAdvertise != "" {
		h, p, _ := splitHostPort(cfg.GossipAdvertise)
		mc.AdvertiseAddr, mc.AdvertisePort = h, p
	}
	gt, err := gossipTransport(host, port, mc.Logger)
	if err != nil {
		return err
	}
	mc.Transport = gt
	if mc.BindPort == 0 { // memberlist learns a picked port only from a transport of its own
		mc.BindPort = gt.GetAutoBindPort()
		if cfg.GossipAdvertise == "" {
			mc.AdvertisePort = mc.BindPort
		}
	}
	mc.SecretKey = cfg.EncryptKey
	mc.ProbeInterval = cfg.ProbeInterval
	mc.ProbeTimeout = cfg.ProbeTimeout
	mc.GossipInterval = cfg.GossipInterval
	mc.SuspicionMult = cfg.SuspicionMult
	mc.PushPullInterval = cfg.PushPullInterval
	mc.TCPTimeout = cfg.TCPTimeout
	mc.DeadNodeReclaimTime = cfg.DeadNodeReclaimTime
	mc.Delegate = delegate{n}
	mc.Events = events{n}
	n.queue = &memberlist.TransmitLimitedQueue{
		NumNodes: func() int {
			if ml := n.ml.Load(); ml != nil {
				return ml.NumMembers()
			}
			return 1
		},
		RetransmitMult: mc.RetransmitMult,
	}
	ml, err := memberlist.Create(mc)
	if err != nil {
		gt.Shutdown()
		return fmt.Errorf("start gossip on %s: %w", cfg.GossipBind, err)
	}
	n.ml.Store(ml)

	if hasState {
		n.log.Info("cluster: resuming from existing raft state", "data_dir", cfg.DataDir)
	} else if cfg.BootstrapExpect > 0 {
		n.wg.Add(1)
		go n.bootstrapLoop()
	}
	return nil
}

// listen binds the raft port (TLS-wrapped when configured) and builds the
// raft network transport and the node meta over it.
func (n *Node) listen(hlog hclog.Logger) error {
	cfg := n.cfg
	ln, err := net.Listen("tcp", cfg.RaftBind)
	if err != nil {
		return fmt.Errorf("raft listen %s: %w", cfg.RaftBind, err)
	}
	var adv net.Addr = ln.Addr()
	if cfg.RaftAdvertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise); err != nil {
			ln.Close()
			return fmt.Errorf("raft advertise %s: %w", cfg.RaftAdvertise, err)
		}
	}
	if srv := n.serverTLS(); srv != nil {
		ln = tls.NewListener(ln, srv)
	}
	n.mux = newMux(ln, adv, cfg.TCPTimeout, n.serveForward, n.clientTLS(), &n.stats, n.log)
	n.raftAddr = adv.String()
	if n.meta, err = encodeMeta(nodeMeta{ID: cfg.NodeName, RaftAddr: n.raftAddr, Expect: cfg.BootstrapExpect}); err != nil {
		return err
	}
	if len(n.meta) > memberlist.MetaMaxSize {
		return fmt.Errorf("node meta is %d bytes, limit %d: shorten the node name", len(n.meta), memberlist.MetaMaxSize)
	}
	n.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: raftLayer{n.mux}, MaxPool: 3, Timeout: 10 * time.Second, Logger: hlog})
	return nil
}

func (n *Node) batcherRun() {
	defer n.wg.Done()
	n.batcher.run()
}

// Join contacts existing members at addrs (gossip host:port) and returns how
// many answered. It fails only if none did.
func (n *Node) Join(ctx context.Context, addrs []string) (int, error) {
	if !n.started.Load() {
		return 0, ErrNotStarted
	}
	if n.cfg.Standalone {
		return 0, ErrStandalone
	}
	return n.join(ctx, addrs)
}

func (n *Node) join(ctx context.Context, addrs []string) (int, error) {
	type result struct {
		n   int
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := n.ml.Load().Join(addrs)
		ch <- result{c, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return r.n, fmt.Errorf("join %v: %w", addrs, r.err)
		}
		return r.n, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("join %v: %w", addrs, ctx.Err())
	}
}

func (n *Node) retryJoin() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.RetryJoinInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.RetryJoinInterval)
			_, err := n.join(ctx, n.cfg.Join)
			cancel()
			if err == nil {
				n.log.Info("cluster: joined", "addrs", n.cfg.Join)
				return
			}
		case <-n.shutdownCh:
			return
		}
	}
}

// Propose replicates cmd and returns the Applier's result for it, as
// produced by this node's own Applier once the command is committed and
// applied here (so a caller on a follower reads its own write locally).
// On the leader the command joins the next group-commit batch; on a follower
// it is forwarded to the leader. While there is no leader, or the contacted
// node turns out not to be the leader, Propose retries with backoff until
// ctx's deadline or Config.ApplyTimeout, whichever is first.
//
// Errors: ErrNoLeader or ErrTimeout at the deadline (both also wrap the
// context error), ErrClosed, ErrTooLarge, ErrLeadershipLost (outcome
// unknown, not retried), ErrNoResult (committed, but this node caught up by
// snapshot past it), or the context's error when it is cancelled.
func (n *Node) Propose(ctx context.Context, cmd []byte) (any, error) {
	if !n.started.Load() {
		return nil, ErrNotStarted
	}
	if n.isClosed() {
		return nil, ErrClosed
	}
	if len(cmd) > n.cfg.MaxBatchBytes {
		return nil, fmt.Errorf("propose %d bytes, limit %d: %w", len(cmd), n.cfg.MaxBatchBytes, ErrTooLarge)
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.ApplyTimeout)
	defer cancel()
	seq := n.seq.Add(1)
	resCh := n.waiters.register(seq)
	defer n.waiters.cancel(seq)
	c := command{Origin: n.epoch, Seq: seq, Cmd: cmd}
	backoff := 2 * time.Millisecond
	maxBackoff := n.cfg.HeartbeatTimeout / 4
	for {
		index, err := n.proposeOnce(ctx, c)
		if err == nil {
			return n.awaitResult(ctx, resCh, index)
		}
		switch {
		case ctx.Err() != nil:
			return nil, deadlineErr(ctx, err)
		case n.isClosed():
			return nil, fmt.Errorf("propose: %w: %w", ErrClosed, err)
		case !errors.Is(err, errNotLeader) && !errors.Is(err, ErrNoLeader):
			return nil, fmt.Errorf("propose: %w", err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, deadlineErr(ctx, err)
		case <-n.shutdownCh:
			t.Stop()
			return nil, ErrClosed
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// awaitResult waits for this node's FSM to apply a committed command (at
// raft index) and hand over the Applier's result. If the node instead
// installs a snapshot that already contains the command, Apply never runs
// for it here and ErrNoResult is returned.
func (n *Node) awaitResult(ctx context.Context, resCh <-chan any, index uint64) (any, error) {
	for {
		select {
		case res := <-resCh:
			return res, nil
		default:
		}
		covered, restored := n.fsm.restoredState()
		if index > 0 && covered >= index {
			return nil, fmt.Errorf("propose: command at index %d: %w", index, ErrNoResult)
		}
		select {
		case res := <-resCh:
			return res, nil
		case <-restored:
		case <-ctx.Done():
			return nil, deadlineErr(ctx, errors.New("committed; not yet applied on this node"))
		case <-n.shutdownCh:
			return nil, ErrClosed
		}
	}
}

// deadlineErr reports a Propose that ran out of time: ErrNoLeader if the
// last attempt found no leader, else ErrTimeout; a cancelled context is
// reported as itself.
func deadlineErr(ctx context.Context, last error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("propose: %w (last attempt: %v)", ctx.Err(), last)
	}
	if errors.Is(last, ErrNoLeader) {
		return fmt.Errorf("propose: %w: %w", ErrNoLeader, ctx.Err())
	}
	return fmt.Errorf("propose: %w: %w (last attempt: %v)", ErrTimeout, ctx.Err(), last)
}

// proposeOnce makes one attempt through the leader this node currently
// knows. A nil error means committed, at the returned raft index.
func (n *Node) proposeOnce(ctx context.Context, c command) (uint64, error) {
	addr, id := n.raft.LeaderWithID()
	if id == "" {
		return 0, ErrNoLeader
	}
	if string(id) == n.cfg.NodeName {
		type outcome struct {
			index uint64
			err   error
		}
		done := make(chan outcome, 1)
		p := &proposal{cmd: c, done: func(index uint64, err error) { done <- outcome{index, err} }}
		if err := n.batcher.submit(p, ctx.Done()); err != nil {
			return 0, err
		}
		select {
		case o := <-done:
			return o.index, o.err
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-n.shutdownCh: // the batcher may have stopped without seeing p
			return 0, ErrClosed
		}
	}
	n.stats.forwarded.Add(1)
	r, err := n.fwd.call(ctx, string(addr), fwdRequest{Kind: reqPropose, Origin: c.Origin, Seq: c.Seq, Body: c.Cmd})
	if err != nil {
		return 0, err
	}
	return r.Index, errFor(r, string(addr))
}

func (n *Node) isClosed() bool {
	select {
	case <-n.shutdownCh:
		return true
	default:
		return false
	}
}

// trackConn records served forwarding connections so Close can end them.
// It reports false once the node is closing.
func (n *Node) trackConn(c net.Conn, add bool) bool {
	n.cmu.Lock()
	defer n.cmu.Unlock()
	if n.conns == nil {
		return false
	}
	if add {
		n.conns[c] = struct{}{}
	} else {
		delete(n.conns, c)
	}
	return true
}

// Close stops the node as for a restart: if it is the leader it first hands
// leadership to another voter, then it stops gossip without announcing a
// leave and shuts raft down. It stays in the raft configuration; the others
// see it as failed (reaped only after DeadNodeReap) and it resumes from
// DataDir when started again. Use Leave to go away for good. Close is
// idempotent.
func (n *Node) Close() error { return n.shutdown(true) }

// shutdown stops the node; handOver selects the leadership transfer (tests
// emulate a crash without it).
func (n *Node) shutdown(handOver bool) error {
	n.smu.Lock()
	prev := n.state
	n.state = stateClosed
	n.smu.Unlock()
	if prev == stateClosed {
		return nil
	}
	close(n.shutdownCh)
	if prev == stateNew {
		return nil
	}
	return n.teardown(handOver)
}

// teardown releases what start set up, in dependency order; fields that
// were never set are skipped. shutdownCh is already closed.
func (n *Node) teardown(handOver bool) error {
	var errs []error
	if handOver && !n.cfg.Standalone && n.raft != nil && n.raft.State() == raft.Leader {
		if err := n.raft.LeadershipTransfer().Error(); err != nil {
			n.log.Warn("cluster: leadership transfer on close failed", "err", err)
		}
	}
	if ml := n.ml.Load(); ml != nil {
		if err := ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("stop gossip: %w", err))
		}
	}
	if n.fwd != nil {
		n.fwd.close()
	}
	if n.raft != nil {
		if err := n.raft.Shutdown().Error(); err != nil {
			errs = append(errs, fmt.Errorf("stop raft: %w", err))
		}
	}
	close(n.raftDone)
	n.cmu.Lock()
	for c := range n.conns {
		c.Close()
	}
	n.conns = nil
	n.cmu.Unlock()
	if n.trans != nil {
		if err := n.trans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft transport: %w", err))
		}
	}
	if n.mux != nil {
		n.mux.close()
	}
	n.wg.Wait()
	if err := n.stores.close(); err != nil {
		errs = append(errs, err)
	}
	if n.lock != nil {
		n.lock.Close() // releases the flock
	}
	return errors.Join(errs...)
}

// Leave removes the node from the cluster for good and then closes it: it
// announces the leave in gossip, has the leader remove it from the raft
// configuration (itself, if it is the leader: raft then steps down) and
// waits for that to commit, bounded by ctx. A node that left can come back
// later by starting again; the leader then adds it anew. A standalone node
// has nobody to leave: ErrStandalone, and it keeps running.
func (n *Node) Leave(ctx context.Context) error {
	if !n.started.Load() {
		return ErrNotStarted
	}
	if n.cfg.Standalone {
		return ErrStandalone
	}
	if n.isClosed() {
		return ErrClosed
	}
	var errs []error
	if intent, err := encodeGossip(gossipMsg{From: n.cfg.NodeName}); err == nil {
		n.queue.QueueBroadcast(&namedBroadcast{name: "\x00leave:" + n.cfg.NodeName, msg: intent})
	}
	if err := n.ml.Load().Leave(n.cfg.TCPTimeout); err != nil {
		errs = append(errs, fmt.Errorf("gossip leave: %w", err))
	}
	if err := n.removeSelf(ctx); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, n.Close())
	return errors.Join(errs...)
}

func (n *Node) removeSelf(ctx context.Context) error {
	backoff := 5 * time.Millisecond
	for {
		var err error
		addr, id := n.raft.LeaderWithID()
		switch {
		case id == "":
			err = ErrNoLeader
		case string(id) == n.cfg.NodeName:
			err = n.removeServer(n.cfg.NodeName)
		default:
			var r fwdResponse
			r, err = n.fwd.call(ctx, string(addr), fwdRequest{Kind: reqRemove, Body: []byte(n.cfg.NodeName)})
			if err == nil {
				err = errFor(r, string(addr))
			}
		}
		if err == nil {
			return nil
		}
		if !errors.Is(err, errNotLeader) && !errors.Is(err, ErrNoLeader) && !errors.Is(err, ErrLeadershipLost) {
			return fmt.Errorf("leave: remove from raft: %w", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return fmt.Errorf("leave: remove from raft: %w: %w", ctx.Err(), err)
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// removeServer removes id from the raft configuration; leader only.
func (n *Node) removeServer(id string) error {
	if n.raft.State() != raft.Leader {
		return fmt.Errorf("remove %s: %w", id, errNotLeader)
	}
	n.members.markLeft(id, true, time.Now()) // raft ID = node name
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return fmt.Errorf("remove %s: %w", id, mapRaftErr(err))
	}
	n.log.Info("cluster: removed server that left", "id", id)
	return nil
}

// Snapshot makes raft take a snapshot now (and compact the log down to
// TrailingLogs entries).
func (n *Node) Snapshot() error {
	if !n.started.Load() {
		return ErrNotStarted
	}
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// IsLeader reports whether this node is the raft leader right now.
func (n *Node) IsLeader() bool {
	return n.started.Load() && n.raft.State() == raft.Leader
}

// Leader returns the current leader's raft ID and address as this node knows
// them; empty when unknown.
func (n *Node) Leader() (id, addr string) {
	if !n.started.Load() {
		return "", ""
	}
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// RaftAddr is the advertised raft/forwarding address (resolved after Start);
// a standalone node's is a fixed in-process name, not a network address.
func (n *Node) RaftAddr() string {
	if !n.started.Load() {
		return ""
	}
	return n.raftAddr
}

// GossipAddr is the advertised gossip address (resolved after Start); empty
// on a standalone node.
func (n *Node) GossipAddr() string {
	if !n.started.Load() || n.cfg.Standalone {
		return ""
	}
	ln := n.ml.Load().LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Members returns every gossip member this node knows of, itself included,
// sorted by name. Dead and left members are listed until DeadNodeReap after
// they went away.
func (n *Node) Members() []Member {
	return n.members.list(time.Now(), n.cfg.DeadNodeReap)
}

// Peer is one server of the raft configuration.
type Peer struct {
	ID       string
	Addr     string
	Suffrage string // "Voter", "Nonvoter" or "Staging"
}

// RaftStatus is a point-in-time view of this node's raft state.
type RaftStatus struct {
	State        string // "Follower", "Candidate", "Leader" or "Shutdown"
	LeaderID     string
	LeaderAddr   string
	Term         uint64
	LastIndex    uint64
	CommitIndex  uint64
	AppliedIndex uint64
	Peers        []Peer
}

// Raft reports this node's raft status.
func (n *Node) Raft() (RaftStatus, error) {
	if !n.started.Load() {
		return RaftStatus{}, ErrNotStarted
	}
	a, id := n.raft.LeaderWithID()
	s := RaftStatus{State: n.raft.State().String(), LeaderID: string(id), LeaderAddr: string(a),
		Term: n.raft.CurrentTerm(), LastIndex: n.raft.LastIndex(), CommitIndex: n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex()}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return s, fmt.Errorf("raft configuration: %w", err)
	}
	for _, srv := range f.Configuration().Servers {
		s.Peers = append(s.Peers, Peer{ID: string(srv.ID), Addr: string(srv.Address), Suffrage: srv.Suffrage.String()})
	}
	return s, nil
}

// Stats returns the node's counters.
func (n *Node) Stats() Stats {
	s := n.stats.snapshot()
	s.Bootstrapped = n.bootstrapped.Load()
	return s
}
