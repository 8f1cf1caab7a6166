package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"time"
)

// Start runs the governor of this process on a goroutine of its own, with
// getrusage, a time.Ticker of Interval and runtime.GOMAXPROCS, until ctx
// ends; wait blocks until it has stopped (and the Ps are back at their
// maximum). It does not run, and wait returns at once, when the process
// started with one P or the GOMAXPROCS environment variable is set: the
// operator chose. While it runs, the maximum is the count the process
// started with (Go's default follows the cgroup CPU limit at start, but no
// longer updates it once GOMAXPROCS has been set).
func Start(ctx context.Context, log *slog.Logger) (wait func()) {
	max := runtime.GOMAXPROCS(0)
	if env, set := os.LookupEnv("GOMAXPROCS"); set || max <= 1 {
		log.Debug("procs: governor off", "procs", max, "env", env)
		return func() {}
	}
	t := time.NewTicker(Interval)
	g := &Governor{Max: max, Sample: cpuTime, Now: time.Now, Tick: t.C,
		Set: func(n int) { runtime.GOMAXPROCS(n) }, Log: log}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.Stop()
		g.Run(ctx)
		// Back on Max Ps; hand the count back to the runtime, which then
		// follows the CPU limit again (any runtime.GOMAXPROCS call stops that).
		runtime.SetDefaultGOMAXPROCS()
	}()
	return func() { <-done }
}
