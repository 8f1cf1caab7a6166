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

// wait returns the fire times once all wanted entries fired (10 s at most).
func (f *fireLog) wait(t *testing.T) []time.Time {
	t.Helper()
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		t.Fatal("timers did not fire within 10 s")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.fired...)
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
	fired := f.wait(t)
	for i, now := range fired {
		if now.Before(at[2]) {
			t.Errorf("entry %d fired at +%v, before the last deadline of its slack window (+%v)", i, now.Sub(start), at[2].Sub(start))
		}
		if !now.Equal(fired[0]) {
			t.Errorf("entry %d fired by another wake-up (+%v) than entry 0 (+%v)", i, now.Sub(start), fired[0].Sub(start))
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
	fired := f.wait(t)
	if fired[0].Before(first) || fired[1].Before(second) {
		t.Fatalf("fired early: +%v, +%v for deadlines +10ms, +1s", fired[0].Sub(start), fired[1].Sub(start))
	}
	if fired[0].Equal(fired[1]) {
		t.Fatalf("both deadlines served by one wake-up at +%v without slack", fired[0].Sub(start))
	}
}
