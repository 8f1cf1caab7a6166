package procs

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPolicy runs each row's samples through one Policy, starting on cur
// of max Ps and feeding back what Next returns; want is the P count after
// each sample.
func TestPolicy(t *testing.T) {
	calm := func(n int, v float64) []float64 {
		s := make([]float64, n)
		for i := range s {
			s[i] = v
		}
		return s
	}
	cat := func(parts ...[]float64) []float64 {
		var s []float64
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	ps := func(n, p int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = p
		}
		return s
	}
	catI := func(parts ...[]int) []int {
		var s []int
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	for _, tc := range []struct {
		name     string
		cur, max int
		busy     []float64
		want     []int
	}{
		{"busy on one P jumps to max", 1, 4, []float64{Up}, []int{4}},
		{"just under Up stays on one P", 1, 4, []float64{Up - 0.01, 0.69, 0.55}, []int{1, 1, 1}},
		{"far over Up jumps straight to max, never steps", 1, 8, []float64{1.0}, []int{8}},
		{"from any count under max straight to max", 3, 8, []float64{0.9}, []int{8}},
		{"on max, busy stays", 4, 4, []float64{0.9, 3.5}, []int{4, 4}},
		{"DownAfter calm samples drop to 1", 2, 2, calm(DownAfter, 0.1), catI(ps(DownAfter-1, 2), []int{1})},
		{"Down itself counts as calm", 2, 2, calm(DownAfter, Down), catI(ps(DownAfter-1, 2), []int{1})},
		{"one sample over Down resets the count", 2, 2,
			cat(calm(DownAfter-1, 0), []float64{Down + 0.01}, calm(DownAfter, 0)),
			catI(ps(DownAfter-1, 2), []int{2}, ps(DownAfter-1, 2), []int{1})},
		{"idle on one P stays on one P", 1, 2, calm(2*DownAfter, 0), ps(2*DownAfter, 1)},
		{"between Down and Up keeps what it has (one P)", 1, 2, calm(DownAfter+5, 0.6), ps(DownAfter+5, 1)},
		{"between Down and Up keeps what it has (max)", 2, 2, calm(DownAfter+5, 0.6), ps(DownAfter+5, 2)},
		{"max 1 never changes", 1, 1, []float64{0, 5, 0}, []int{1, 1, 1}},
		{"calm on one P does not count toward the next drop", 2, 2,
			cat(calm(DownAfter, 0), calm(DownAfter-2, 0.0), []float64{0.7}, calm(DownAfter-1, 0), []float64{0}),
			catI(ps(DownAfter-1, 2), []int{1}, ps(DownAfter-2, 1), []int{2}, ps(DownAfter-1, 2), []int{1})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.busy) != len(tc.want) {
				t.Fatalf("bad row: %d samples, %d wants", len(tc.busy), len(tc.want))
			}
			var p Policy
			cur := tc.cur
			for i, b := range tc.busy {
				cur = p.Next(cur, tc.max, b)
				if cur != tc.want[i] {
					t.Fatalf("sample %d (busy %.2f): %d Ps, want %d", i, b, cur, tc.want[i])
				}
			}
		})
	}
}

// fakeProc is the process a Governor sees in a test. The test queues what
// happens in the next interval (push); the governor's next sample applies
// it: the clock moves by one Interval and the CPU time by busy cores over
// it (or the sample fails). With nothing queued a sample sees no time
// pass, which the governor skips. Because the interval is applied by the
// sample itself, the samples the policy sees do not depend on how the
// test's ticks and the governor's reads interleave.
type fakeProc struct {
	mu      sync.Mutex
	cpu     time.Duration
	now     time.Time
	pending []interval
	sets    []int
}

type interval struct {
	busy float64
	err  error
}

func (f *fakeProc) push(iv interval) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pending = append(f.pending, iv)
}

func (f *fakeProc) sample() (time.Duration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pending) == 0 {
		return f.cpu, nil
	}
	iv := f.pending[0]
	f.pending = f.pending[1:]
	if iv.err != nil {
		return 0, iv.err
	}
	f.now = f.now.Add(Interval)
	f.cpu += time.Duration(iv.busy * float64(Interval))
	return f.cpu, nil
}

func (f *fakeProc) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeProc) set(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sets = append(f.sets, n)
}

func (f *fakeProc) setsSoFar() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int(nil), f.sets...)
}

// govRun is a Governor running over a fakeProc, ticked by the test.
type govRun struct {
	ticks chan time.Time
	stop  context.CancelFunc
	done  chan struct{}
	logs  *bytes.Buffer
	logMu *sync.Mutex
}

func startGov(t *testing.T, f *fakeProc, max int) *govRun {
	t.Helper()
	r := &govRun{ticks: make(chan time.Time), done: make(chan struct{}), logs: &bytes.Buffer{}, logMu: &sync.Mutex{}}
	log := slog.New(slog.NewTextHandler(lockedWriter{r.logMu, r.logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	g := &Governor{Max: max, Sample: f.sample, Now: f.clock, Tick: r.ticks, Set: f.set, Log: log}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() {
		defer close(r.done)
		g.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	// Once a tick is taken, Run has its first (baseline) sample, so what
	// the test queues next goes to the loop's samples.
	select {
	case r.ticks <- time.Time{}:
	case <-r.done:
	}
	return r
}

type lockedWriter struct {
	mu *sync.Mutex
	w  *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (r *govRun) log() string {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	return r.logs.String()
}

// step queues one interval of busy cores and ticks twice on the unbuffered
// channel: the second send completes only once the governor is back at its
// select, so the interval has been sampled and acted on when step returns
// (by the first tick's sample or the second's; the other sees no time
// pass and is skipped).
func (r *govRun) step(f *fakeProc, busy float64) {
	f.push(interval{busy: busy})
	r.ticks <- time.Time{}
	r.ticks <- time.Time{}
}

func TestGovernorRun(t *testing.T) {
	f := &fakeProc{now: time.Unix(1000, 0)}
	r := startGov(t, f, 2)
	for range DownAfter - 1 {
		r.step(f, 0.05)
	}
	if s := f.setsSoFar(); len(s) != 0 {
		t.Fatalf("after %d calm samples: set %v, want nothing yet", DownAfter-1, s)
	}
	r.step(f, 0.05)
	if s := f.setsSoFar(); len(s) != 1 || s[0] != 1 {
		t.Fatalf("after %d calm samples: set %v, want [1]", DownAfter, s)
	}
	r.step(f, 0.6) // between Down and Up: stays on 1
	r.step(f, 0.8)
	if s := f.setsSoFar(); len(s) != 2 || s[1] != 2 {
		t.Fatalf("after a busy sample on one P: set %v, want [1 2]", s)
	}
	for _, want := range []string{"procs=1 busy_cores=0.05", "procs=2 busy_cores=0.8"} {
		if !strings.Contains(r.log(), want) {
			t.Errorf("log lacks %q:\n%s", want, r.log())
		}
	}
	// Back to one P, then stopped: Run leaves the process on Max.
	for range DownAfter {
		r.step(f, 0)
	}
	r.stop()
	<-r.done
	if s := f.setsSoFar(); len(s) != 4 || s[2] != 1 || s[3] != 2 {
		t.Fatalf("after stop: set %v, want [1 2 1 2] (Max restored)", s)
	}
}

// A stop while on Max sets nothing.
func TestGovernorStopOnMaxSetsNothing(t *testing.T) {
	f := &fakeProc{now: time.Unix(1000, 0)}
	r := startGov(t, f, 4)
	r.step(f, 2)
	r.stop()
	<-r.done
	if s := f.setsSoFar(); len(s) != 0 {
		t.Fatalf("set %v, want nothing", s)
	}
}

// A failed sample is logged once and stops the governor on Max Ps.
func TestGovernorSampleErrorStopsOnMax(t *testing.T) {
	f := &fakeProc{now: time.Unix(1000, 0)}
	r := startGov(t, f, 2)
	for range DownAfter {
		r.step(f, 0)
	}
	f.push(interval{err: errors.New("getrusage: boom")})
	// The failing sample ends Run: tick until it is taken.
	for ended := false; !ended; {
		select {
		case r.ticks <- time.Time{}:
		case <-r.done:
			ended = true
		}
	}
	if s := f.setsSoFar(); len(s) != 2 || s[0] != 1 || s[1] != 2 {
		t.Fatalf("set %v, want [1 2]", s)
	}
	if n := strings.Count(r.log(), "cannot read the CPU time"); n != 1 || !strings.Contains(r.log(), "getrusage: boom") {
		t.Errorf("want one warning with the error, got:\n%s", r.log())
	}
}

// A sampler that fails at once: the governor never changes anything.
func TestGovernorFirstSampleError(t *testing.T) {
	f := &fakeProc{now: time.Unix(1000, 0)}
	f.push(interval{err: errors.New("nope")})
	r := startGov(t, f, 2)
	<-r.done
	if s := f.setsSoFar(); len(s) != 0 {
		t.Fatalf("set %v, want nothing", s)
	}
	if n := strings.Count(r.log(), "cannot read the CPU time"); n != 1 {
		t.Errorf("want one warning, got:\n%s", r.log())
	}
}

// A clock that does not move gives no rate: the sample is skipped.
func TestGovernorSkipsZeroWall(t *testing.T) {
	f := &fakeProc{now: time.Unix(1000, 0)}
	r := startGov(t, f, 2)
	for range 3 * DownAfter {
		r.ticks <- time.Time{} // no time passes
	}
	if s := f.setsSoFar(); len(s) != 0 {
		t.Fatalf("set %v, want nothing: no sample had any wall time", s)
	}
}

// The real sampler reads this process's CPU time, which only grows.
func TestCPUTime(t *testing.T) {
	a, err := cpuTime()
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for i := range 20_000_000 {
		x ^= i
	}
	_ = x
	b, err := cpuTime()
	if err != nil {
		t.Fatal(err)
	}
	if a <= 0 || b < a {
		t.Fatalf("cpu time %v then %v", a, b)
	}
}
