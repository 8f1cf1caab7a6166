package cluster

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// proposal is one command waiting for its batch to commit.
type proposal struct {
	cmd command
	// done is called exactly once, from the batcher, with the commit outcome
	// of the entry that carried the command (nil, errNotLeader, ErrClosed,
	// ErrLeadershipLost, ...). It must not block for long.
	done func(index uint64, err error)
}

// batcher implements group commit on the leader: concurrent proposals are
// packed into one raft entry. At most inflight entries await commit at a
// time; while they do, new proposals queue up and become the next, larger
// batch. With a delay, a batch also waits up to delay for more proposals
// while the pipeline is busy or proposals keep arriving (see lingers). An
// idle node therefore commits a lone proposal immediately, and a busy one
// amortizes each raft round trip and fsync over many commands.
type batcher struct {
	r        *raft.Raft
	maxCmds  int
	maxBytes int
	delay    time.Duration
	timeout  time.Duration // raft enqueue timeout
	stats    *counters

	// formed is when the last batch stopped collecting: the time of the
	// latest proposal taken, near enough, without a clock read per proposal.
	formed time.Time

	in      chan *proposal
	slots   chan struct{}
	stop    <-chan struct{}
	commits sync.WaitGroup // batches awaiting their raft outcome
}

func newBatcher(r *raft.Raft, cfg Config, stats *counters, stop <-chan struct{}) *batcher {
	return &batcher{r: r, maxCmds: cfg.MaxBatch, maxBytes: cfg.MaxBatchBytes, delay: cfg.BatchDelay,
		timeout: cfg.ApplyTimeout, stats: stats,
		in: make(chan *proposal, cfg.MaxBatch*cfg.BatchInflight), slots: make(chan struct{}, cfg.BatchInflight),
		stop: stop}
}

// submit queues p; it blocks only while the queue is full (backpressure).
// On error p.done is not called.
func (b *batcher) submit(p *proposal, cancel <-chan struct{}) error {
	select {
	case b.in <- p:
		return nil
	case <-cancel:
		return ErrTimeout
	case <-b.stop:
		return errStopped
	}
}

// errStopped: the batcher stopped before the command was appended, so for a
// forwarding follower it is as good as "not the leader" (retry elsewhere).
var errStopped = fmt.Errorf("%w: %w", errNotLeader, ErrClosed)

// run forms batches until stop is closed, then fails what is still queued
// and waits for the batches already handed to raft.
func (b *batcher) run() {
	defer b.commits.Wait()
	var next *proposal // carried over when it did not fit the previous batch
	for {
		first := next
		next = nil
		if first == nil {
			select {
			case first = <-b.in:
			case <-b.stop:
				b.drain()
				return
			}
		}
		select {
		case b.slots <- struct{}{}:
		case <-b.stop:
			first.done(0, errStopped)
			b.drain()
			return
		}
		batch := []*proposal{first}
		size := len(first.cmd.Cmd)
		var linger <-chan time.Time
		var timer *time.Timer
		now := time.Now()
		if lingers(b.delay, len(b.slots) > 1, now.Sub(b.formed)) {
			timer = time.NewTimer(b.delay)
			linger = timer.C
		}
	collect:
		for len(batch) < b.maxCmds {
			var p *proposal
			select {
			case p = <-b.in:
			default:
				if linger == nil {
					break collect
				}
				select {
				case p = <-b.in:
				case <-linger:
					break collect
				}
			}
			if size+len(p.cmd.Cmd) > b.maxBytes {
				next = p
				break
			}
			batch = append(batch, p)
			size += len(p.cmd.Cmd)
		}
		if timer != nil {
			timer.Stop()
			now = time.Now()
		}
		b.formed = now
		b.commits.Add(1)
		go b.commit(batch)
	}
}

// lingers decides whether a new batch waits up to delay for more proposals:
// when an earlier batch is still committing (busy), and when the previous
// batch formed less than delay ago, since at that pace more proposals are
// due within the wait. Each entry costs the log an fsync (cluster/logstore),
// so a node under steady call load trades up to delay of commit latency for
// several commands per fsync; an idle node still commits a lone proposal at
// once.
func lingers(delay time.Duration, busy bool, sinceLast time.Duration) bool {
	return delay > 0 && (busy || sinceLast < delay)
}

// commit applies one batch entry and reports the outcome to every proposal.
func (b *batcher) commit(batch []*proposal) {
	defer b.commits.Done()
	defer func() { <-b.slots }()
	cmds := make([]command, len(batch))
	for i, p := range batch {
		cmds[i] = p.cmd
	}
	data, err := encodeEntry(cmds)
	var index uint64
	if err == nil {
		f := b.r.Apply(data, b.timeout)
		err = mapRaftErr(f.Error())
		if err == nil {
			index = f.Index()
			b.stats.batches.Add(1)
			b.stats.batchedCommands.Add(uint64(len(batch)))
		}
	}
	for _, p := range batch {
		p.done(index, err)
	}
}

// drain fails everything still queued once the node stops.
func (b *batcher) drain() {
	for {
		select {
		case p := <-b.in:
			p.done(0, errStopped)
		default:
			return
		}
	}
}

// mapRaftErr translates raft's apply errors into this package's outcomes:
// errNotLeader when the entry was certainly not appended (safe to retry
// elsewhere), ErrLeadershipLost when it may still commit.
func mapRaftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w: %w", errNotLeader, err)
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore),
		errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrLeadershipLost, err)
	}
	return fmt.Errorf("raft apply: %w", err)
}
