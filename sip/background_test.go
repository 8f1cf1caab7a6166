package sip

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Work arriving while Shutdown waits is refused rather than racing the
// WaitGroup (the race detector checks the concurrent case); work admitted
// before the close has finished when CloseAndWait returns.
func TestBackgroundCloseAndWait(t *testing.T) {
	var b background
	var ran, after atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.Go(func() { ran.Add(1) })
		}()
	}
	b.CloseAndWait()
	admitted := ran.Load()
	wg.Wait()
	b.Go(func() { after.Add(1) })
	if after.Load() != 0 {
		t.Fatal("work ran after CloseAndWait")
	}
	if ran.Load() != admitted {
		t.Fatalf("%d goroutines ran after CloseAndWait returned (had %d)", ran.Load()-admitted, admitted)
	}
}
