// Package procs chooses GOMAXPROCS from the process's CPU use: one P while
// the node uses little CPU, all of them as soon as it needs them.
//
// Why: with several Ps, every goroutine hand-off of a request (read loop →
// request goroutine → actor → raft …) finds another P idle, and the runtime
// wakes a second OS thread to spin for work (runtime.wakep/startm), which
// then parks again. Measured on a 2-core VM (stateful proxy, 400 calls/s,
// durable single node): ~23 context switches per call against Kamailio's
// 4.8, at ~14 µs each on that hypervisor; the same binary with
// GOMAXPROCS=1 used 30–37 % less CPU per call. One P caps the process at
// one core, so the governor gives the Ps back as soon as the process is
// busy (see docs/configuration.md, node.procs).
package procs

import (
	"context"
	"log/slog"
	"time"
)

const (
	// Up is the CPU use (cores, user+system) at or above which a process
	// on fewer than all Ps gets all of them at once. Below one core, so
	// that a process held to one P, which can use little more than one
	// core, crosses it well before it saturates that P (queueing at 70 %
	// of one P still costs well under a millisecond per message).
	Up = 0.7
	// Down is the CPU use (cores) at or below which a process on all Ps
	// counts a calm sample. The same load costs 15–35 % more CPU on all
	// Ps than on one (that is the point of the governor), so a process
	// that just went up sits well above Down, and one that just went down
	// well below Up: the band between them does not flap. A lower Down
	// kept a node at 800 calls/s (0.33 cores on two Ps, 0.23 on one) on
	// both Ps for good.
	Down = 0.5
	// DownAfter is how many calm samples in a row (1 s of Interval) drop
	// the process to one P. Dropping costs little even in a short lull:
	// the Ps come back within one Interval of the next busy sample, and a
	// change is one short stop-the-world; waiting longer only keeps
	// threads waking for nothing (a 10 s benchmark run spent 3 of them on
	// two Ps with 3 s).
	DownAfter = 10
	// Interval is the sample period: short enough that a burst gets all
	// Ps within ~100 ms, long enough that getrusage costs nothing.
	Interval = 100 * time.Millisecond
)

// Policy decides the next P count from one sample at a time. Its zero
// value is ready; it counts the calm samples in a row.
type Policy struct {
	calm int
}

// Next returns the P count to run with after a sample in which the process
// used busy cores, running on cur of max Ps: max at once when cur < max and
// busy ≥ Up; 1 when cur == max > 1 and the last DownAfter samples were all
// ≤ Down; else cur. A sample above Down resets the calm count.
func (p *Policy) Next(cur, max int, busy float64) int {
	if busy > Down {
		p.calm = 0
	}
	switch {
	case cur < max:
		p.calm = 0
		if busy >= Up {
			return max
		}
	case cur == max && max > 1 && busy <= Down:
		p.calm++
		if p.calm >= DownAfter {
			p.calm = 0
			return 1
		}
	}
	return cur
}

// Governor samples the process's CPU time on each tick and sets the P
// count that Policy chooses. Every field is required; Real fills them for
// the running process.
type Governor struct {
	Max    int                           // the P count the process started with
	Sample func() (time.Duration, error) // cumulative CPU time of the process (user+system)
	Now    func() time.Time              // the wall clock
	Tick   <-chan time.Time              // one sample per tick
	Set    func(n int)                   // sets the P count
	Log    *slog.Logger
}

// Run governs until ctx ends, starting from Max Ps, and leaves the process
// on Max Ps when it returns. A failed sample is logged once and ends Run
// (on Max Ps).
func (g *Governor) Run(ctx context.Context) {
	cur := g.Max
	defer func() {
		if cur != g.Max {
			g.Set(g.Max)
		}
	}()
	var pol Policy
	last, err := g.Sample()
	if err != nil {
		g.Log.Warn("procs: cannot read the CPU time; GOMAXPROCS stays at its maximum", "procs", g.Max, "err", err)
		return
	}
	lastAt := g.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.Tick:
		}
		cpu, err := g.Sample()
		if err != nil {
			g.Log.Warn("procs: cannot read the CPU time; GOMAXPROCS stays at its maximum", "procs", g.Max, "err", err)
			return
		}
		now := g.Now()
		wall := now.Sub(lastAt)
		if wall <= 0 {
			continue // a clock step back: no rate from this sample
		}
		busy := float64(cpu-last) / float64(wall)
		last, lastAt = cpu, now
		if next := pol.Next(cur, g.Max, busy); next != cur {
			g.Set(next)
			cur = next
			g.Log.Debug("procs: GOMAXPROCS changed", "procs", next, "busy_cores", busy)
		}
	}
}
