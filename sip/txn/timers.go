package txn

import (
	"container/heap"
	"sync"
	"time"
)

// timers runs every transaction timer of a Layer from one goroutine: a heap
// of deadlines under one mutex, and one time.Timer set to the earliest. A
// transaction has one deadline at a time (its next retransmission or its end,
// whichever comes first) and works out what is due when it fires. Entries are
// never removed: rescheduling bumps the transaction's generation and a stale
// entry is skipped when it comes up, which is cheaper than heap removal for
// deadlines that mostly do fire.
//
// Deadlines fire up to slack late, so that the ones close together are served
// by one wake-up of the goroutine: each transaction has its own deadlines
// (several a call), and at a few hundred calls a second a wake-up per
// deadline was a measurable part of a call's CPU. Kamailio's timers tick 16
// times a second; the layer's slack is T1/32 (16 ms with the RFC's T1).
type timers struct {
	slack time.Duration
	mu    sync.Mutex
	h     timerHeap
	wake  chan struct{} // a deadline earlier than the timer's was added
	stop  chan struct{}
	done  chan struct{}
}

// firer is a transaction's side of a timer.
type firer interface {
	fire(gen uint32, now time.Time)
}

type timerEntry struct {
	at  time.Time
	tx  firer
	gen uint32
}

type timerHeap []timerEntry

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timerEntry)) }
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = timerEntry{}
	*h = old[:len(old)-1]
	return e
}

func newTimers(slack time.Duration) *timers {
	t := &timers{slack: slack, wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go t.run()
	return t
}

// add schedules tx.fire(gen, …) at at.
func (t *timers) add(at time.Time, tx firer, gen uint32) {
	t.mu.Lock()
	heap.Push(&t.h, timerEntry{at: at, tx: tx, gen: gen})
	first := t.h[0].tx == tx && t.h[0].gen == gen
	t.mu.Unlock()
	if first {
		select {
		case t.wake <- struct{}{}:
		default:
		}
	}
}

func (t *timers) run() {
	defer close(t.done)
	clock := time.NewTimer(time.Hour)
	defer clock.Stop()
	var due []timerEntry
	for {
		now := time.Now()
		t.mu.Lock()
		for len(t.h) > 0 && !t.h[0].at.After(now) {
			due = append(due, heap.Pop(&t.h).(timerEntry))
		}
		next := time.Hour
		if len(t.h) > 0 {
			next = t.h[0].at.Sub(now) + t.slack
		}
		t.mu.Unlock()
		for i, e := range due {
			e.tx.fire(e.gen, now)
			due[i] = timerEntry{}
		}
		due = due[:0]
		clock.Reset(next)
		select {
		case <-clock.C:
		case <-t.wake:
			if !clock.Stop() {
				select {
				case <-clock.C:
				default:
				}
			}
		case <-t.stop:
			return
		}
	}
}

func (t *timers) close() {
	close(t.stop)
	<-t.done
}
