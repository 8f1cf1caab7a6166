package cluster

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// Applier is the replicated state machine the cluster drives; the domain
// package implements it. Command and snapshot bytes are opaque to the
// cluster.
//
// All methods are called on raft's FSM goroutine, one at a time. They must be
// deterministic (same commands in the same order give the same state and
// results on every node, so no clock reads or randomness inside) and must not
// block long: the whole node's commit pipeline waits for them. A panic is not
// recovered: skipping a command would silently fork this node's state from
// the others, so crashing is the safer failure.
type Applier interface {
	// Apply applies one committed command. index is the raft log index of
	// the entry that carried it; several commands of one batch share an
	// index and arrive in batch order. The result goes back to the Propose
	// call that proposed cmd, on the node where it was proposed.
	Apply(index uint64, cmd []byte) any
	// Snapshot captures the state cheaply (for example an immutable copy or
	// copy-on-write reference); the returned writer serializes it later,
	// concurrently with further Apply calls.
	Snapshot() (SnapshotWriter, error)
	// Restore replaces all state with the snapshot read from r (what a
	// SnapshotWriter wrote). Existing state must be discarded first.
	Restore(r io.Reader) error
}

// SnapshotWriter is a captured state, written once to a snapshot sink.
type SnapshotWriter interface {
	// WriteTo (io.WriterTo) serializes the captured state to w and returns
	// the bytes written. It runs on its own goroutine, concurrently with
	// Applier.Apply.
	io.WriterTo
	// Release is called when raft is done with the snapshot, written or not.
	Release()
}

// fsm adapts an Applier to raft.FSM and raft.BatchingFSM: it splits each
// batch entry into commands and hands each result to the local waiter, if any.
type fsm struct {
	app     Applier
	node    string
	epoch   uint64
	waiters *waiters
	stats   *counters
	log     *slog.Logger

	lastIndex atomic.Uint64 // last command entry applied (snapshot header)

	rmu         sync.Mutex
	restoredIdx uint64        // guarded by rmu: last command index in the latest restored snapshot
	restoredCh  chan struct{} // guarded by rmu: closed (and replaced) by each Restore
}

func newFSM(app Applier, node string, epoch uint64, w *waiters, stats *counters, log *slog.Logger) *fsm {
	return &fsm{app: app, node: node, epoch: epoch, waiters: w, stats: stats, log: log, restoredCh: make(chan struct{})}
}

// restoredState returns the index covered by the latest restored snapshot
// and a channel closed by the next Restore.
func (f *fsm) restoredState() (uint64, <-chan struct{}) {
	f.rmu.Lock()
	defer f.rmu.Unlock()
	return f.restoredIdx, f.restoredCh
}

var _ raft.BatchingFSM = (*fsm)(nil)

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any { return f.applyLog(l) }

// ApplyBatch implements raft.BatchingFSM; raft hands over up to
// MaxAppendEntries committed entries at once, configuration entries included.
func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	res := make([]any, len(logs))
	for i, l := range logs {
		res[i] = f.applyLog(l)
	}
	return res
}

// applyLog returns the number of commands applied, or the decode error (raft
// hands it to the leader's future; our batcher ignores it because malformed
// entries cannot come from our own encoder).
func (f *fsm) applyLog(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.lastIndex.Store(l.Index)
	cmds, err := decodeEntry(l.Data)
	if err != nil {
		f.stats.badEntries.Add(1)
		f.log.Error("cluster: skipping malformed raft entry", "index", l.Index, "err", err)
		return err
	}
	for _, c := range cmds {
		res := f.app.Apply(l.Index, c.Cmd)
		if c.Origin == f.epoch && c.Origin != 0 {
			f.waiters.deliver(c.Seq, res)
		}
	}
	f.stats.entries.Add(1)
	f.stats.commands.Add(uint64(len(cmds)))
	return len(cmds)
}

// Snapshot implements raft.FSM.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	w, err := f.app.Snapshot()
	if err != nil {
		return nil, fmt.Errorf("applier snapshot: %w", err)
	}
	return &fsmSnapshot{w: w, hdr: snapshotHeader{Index: f.lastIndex.Load(), Node: f.node}}, nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	h, err := readSnapshotHeader(br)
	if err != nil {
		f.stats.badSnapshots.Add(1)
		return fmt.Errorf("restore: %w", err)
	}
	if err := f.app.Restore(br); err != nil {
		f.stats.badSnapshots.Add(1)
		return fmt.Errorf("restore snapshot of %s at %d: %w", h.Node, h.Index, err)
	}
	f.lastIndex.Store(h.Index)
	f.stats.restores.Add(1)
	f.rmu.Lock()
	f.restoredIdx = h.Index
	close(f.restoredCh)
	f.restoredCh = make(chan struct{})
	f.rmu.Unlock()
	return nil
}

type fsmSnapshot struct {
	w   SnapshotWriter
	hdr snapshotHeader
}

// Persist writes the header and the Applier's bytes; raft's file store adds a
// checksum that is verified before Restore sees the stream.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriterSize(sink, 64<<10)
	err := writeSnapshotHeader(bw, s.hdr)
	if err == nil {
		_, err = s.w.WriteTo(bw)
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.w.Release() }

// waiters routes Applier results to the Propose calls of this process, keyed
// by proposal sequence number.
type waiters struct {
	mu sync.Mutex
	m  map[uint64]chan any // guarded by mu
}

func newWaiters() *waiters { return &waiters{m: make(map[uint64]chan any)} }

func (w *waiters) register(seq uint64) chan any {
	ch := make(chan any, 1)
	w.mu.Lock()
	w.m[seq] = ch
	w.mu.Unlock()
	return ch
}

func (w *waiters) cancel(seq uint64) {
	w.mu.Lock()
	delete(w.m, seq)
	w.mu.Unlock()
}

// deliver never blocks: the channel has room for the single result.
func (w *waiters) deliver(seq uint64, res any) {
	w.mu.Lock()
	ch, ok := w.m[seq]
	delete(w.m, seq)
	w.mu.Unlock()
	if ok {
		ch <- res
	}
}

// counters are the node's event counts (see Stats).
type counters struct {
	entries, commands                  atomic.Uint64
	badEntries, badSnapshots, restores atomic.Uint64
	batches, batchedCommands           atomic.Uint64
	forwarded, forwardServed, badRPC   atomic.Uint64
	gossipReceived, gossipDropped      atomic.Uint64
	gossipBad, badMeta                 atomic.Uint64
	tlsFailed                          atomic.Uint64
}

// Stats are counters since the node was created.
type Stats struct {
	Entries         uint64 // command entries applied by the FSM
	Commands        uint64 // commands applied by the FSM (Entries/Commands shows group commit)
	BadEntries      uint64 // malformed raft entries skipped
	BadSnapshots    uint64 // snapshots that failed to restore
	Restores        uint64 // snapshots restored
	Batches         uint64 // entries this node proposed as leader
	BatchedCommands uint64 // commands in those entries
	Forwarded       uint64 // proposals sent to another leader
	ForwardServed   uint64 // forwarded proposals received as leader
	BadRPC          uint64 // malformed or unknown frames on the raft port
	GossipReceived  uint64 // broadcasts delivered to OnMessage handlers
	GossipDropped   uint64 // broadcasts dropped because the queue was full
	GossipBad       uint64 // malformed broadcasts
	BadMeta         uint64 // members with malformed node meta
	TLSFailed       uint64 // TLS handshakes refused on the raft port (Config.TLS)
	Bootstrapped    bool   // this process bootstrapped the raft cluster
}

func (c *counters) snapshot() Stats {
	return Stats{
		Entries: c.entries.Load(), Commands: c.commands.Load(),
		BadEntries: c.badEntries.Load(), BadSnapshots: c.badSnapshots.Load(), Restores: c.restores.Load(),
		Batches: c.batches.Load(), BatchedCommands: c.batchedCommands.Load(),
		Forwarded: c.forwarded.Load(), ForwardServed: c.forwardServed.Load(), BadRPC: c.badRPC.Load(),
		GossipReceived: c.gossipReceived.Load(), GossipDropped: c.gossipDropped.Load(),
		GossipBad: c.gossipBad.Load(), BadMeta: c.badMeta.Load(), TLSFailed: c.tlsFailed.Load(),
	}
}
