package cluster

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"github.com/sipdispatch/sipdispatch/cluster/logstore"
)

// BenchmarkPropose measures committed commands per second with 64 concurrent
// proposers spread over the nodes (on 3 nodes, two thirds are forwarded),
// fsync on, 64-byte commands.
func BenchmarkPropose(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			c := newCluster(b, nodes, nil)
			cmd := make([]byte, 64)
			const workers = 64
			var next atomic.Int64
			var wg sync.WaitGroup
			before := c.waitLeader().Stats()
			b.ResetTimer()
			start := time.Now()
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					n := c.nodes[w%nodes]
					for next.Add(1) <= int64(b.N) {
						ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
						_, err := n.Propose(ctx, cmd)
						cancel()
						if err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			after := c.waitLeader().Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "cmds/s")
			if e := after.Entries - before.Entries; e > 0 {
				b.ReportMetric(float64(after.Commands-before.Commands)/float64(e), "cmds/entry")
			}
		})
	}
}

// BenchmarkCommitLatency measures one proposer's commit latency, one command
// at a time (no batching to hide behind), 64-byte commands, fsync on, raft
// log on disk, the nodes in this process on loopback: on 1 node, and
// on 3 nodes proposed on the leader and on a follower (forwarded to the
// leader). It reports p50 and p99 in microseconds.
func BenchmarkCommitLatency(b *testing.B) {
	for _, tc := range []struct {
		name     string
		nodes    int
		follower bool
	}{{"nodes=1", 1, false}, {"nodes=3/leader", 3, false}, {"nodes=3/follower", 3, true}} {
		b.Run(tc.name, func(b *testing.B) {
			// Production CommitTimeout: it bounds how late a follower learns
			// that its forwarded command committed.
			c := newCluster(b, tc.nodes, func(cfg *Config) { cfg.CommitTimeout = DefaultConfig().CommitTimeout })
			n := c.waitLeader()
			if tc.follower {
				for _, m := range c.nodes {
					if m != n {
						n = m
						break
					}
				}
			}
			cmd := make([]byte, 64)
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				start := time.Now()
				_, err := n.Propose(ctx, cmd)
				lat = append(lat, time.Since(start))
				cancel()
				if err != nil {
					b.Fatal(err)
				}
			}
			slices.Sort(lat)
			pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) }
			b.ReportMetric(pct(0.5), "p50-µs")
			b.ReportMetric(pct(0.99), "p99-µs")
		})
	}
}

// BenchmarkLogAppend compares the raft log stores on their own: raft-boltdb
// (before) and logstore, appending per call one entry or a batch of 16
// (what raft's leader does with several queued group-commit entries), 200
// bytes each, fsync on. It reports the process CPU per call, which on this
// VM is mostly the fdatasyncs.
func BenchmarkLogAppend(b *testing.B) {
	stores := map[string]func(b *testing.B, dir string) raft.LogStore{
		"bolt": func(b *testing.B, dir string) raft.LogStore {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db")})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
		"logstore": func(b *testing.B, dir string) raft.LogStore {
			s, err := logstore.Open(filepath.Join(dir, "raft-log"), logstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		},
	}
	for _, name := range []string{"bolt", "logstore"} {
		for _, batch := range []int{1, 16} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", name, batch), func(b *testing.B) {
				s := stores[name](b, b.TempDir())
				logs := make([]*raft.Log, batch)
				next := uint64(1)
				var ru0 syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
				for b.Loop() {
					for i := range logs {
						logs[i] = &raft.Log{Index: next, Term: 1, Type: raft.LogCommand, Data: make([]byte, 200)}
						next++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				var ru syscall.Rusage
				syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
				cpu := ru.Utime.Nano() + ru.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
				b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/op")
			})
		}
	}
}
