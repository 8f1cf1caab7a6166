package txn

import (
	"sync"
	"testing"
	"time"
)

// fireLog records when each entry fired and with which wake-up's now.
type fireLog struct {
	mu    sync.Mutex
	fired []time.Time
	done  chan struct{}
	want  int
}

func (f *fireLog) fire(_ uint32, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fired = append(f.fired, now)
	if len(f.fired) == f.want {
		close(f.done)
	}
}

// TestTimersSlackBatches checks that deadlines closer together than the
// slack are served by one wake-up, and none before its time.
func TestTimersSlackBatches(t *testing.T) {
	tm := newTimers(200 * time.Millisecond)
	defer tm.close()
	f := &fireLog{done: make(chan struct{}), want: 3}
	start := time.Now()
	at := []time.Time{start.Add(20 * time.Millisecond), start.Add(30 * time.Millisecond), start.Add(60 * time.Millisecond)}
	for _, a := range at {
		tm.add(a, f, 0)
	}
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("timers did not fire within 10 s")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, now := range f.fired {
		if now.Before(at[2]) {
			t.Errorf("entry %d fired at +%v, before the last deadline of its slack window (+%v)", i, now.Sub(start), at[2].Sub(start))
		}
		if !now.Equal(f.fired[0]) {
			t.Errorf("entry %d fired by another wake-up (+%v) than entry 0 (+%v)", i, now.Sub(start), f.fired[0].Sub(start))
		}
	}
}

// TestTimersNoSlackFiresEach checks that without slack each deadline is
// served at its own time.
func TestTimersNoSlackFiresEach(t *testing.T) {
	tm := newTimers(0)
	defer tm.close()
	f := &fireLog{done: make(chan struct{}), want: 2}
	start := time.Now()
	first, second := start.Add(10*time.Millisecond), start.Add(time.Second)
	tm.add(second, f, 0)
	tm.add(first, f, 0) // earlier than the head: wakes the loop
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("timers did not fire within 10 s")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fired[0].Before(first) || f.fired[1].Before(second) {
		t.Fatalf("fired early: +%v, +%v for deadlines +10ms, +1s", f.fired[0].Sub(start), f.fired[1].Sub(start))
	}
	if f.fired[0].Equal(f.fired[1]) {
		t.Fatalf("both deadlines served by one wake-up at +%v without slack", f.fired[0].Sub(start))
	}
}
