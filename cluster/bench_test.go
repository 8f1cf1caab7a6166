package cluster

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
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
