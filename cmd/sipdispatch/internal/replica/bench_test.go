package replica

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/cluster"
	"github.com/sipdispatch/sipdispatch/cmd/sipdispatch/internal/source"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// benchSource installs fixed sets when the standalone node leads, as
// source.Sources does with a list file.
type benchSource struct {
	sets []dispatch.Set
	reg  *actors.Registry
}

func (s *benchSource) SetRegistry(reg *actors.Registry) { s.reg = reg }
func (s *benchSource) Sync(ctx context.Context, _ bool) bool {
	return s.reg.Replace(ctx, s.sets) == nil
}
func (s *benchSource) WarnDrift(source.RaftView) {}

// startBenchNode starts what `sipdispatch serve` runs without cluster.enabled:
// the registry over a standalone one-node raft with its log on disk (fsync
// on) and the pending-load file, with set 1 of three destinations and call
// load on (ds_hash_size 14), load_replication sync.
func startBenchNode(b *testing.B) (*actors.Registry, *cluster.Node) {
	b.Helper()
	dir := b.TempDir()
	ncfg := cluster.DefaultConfig()
	ncfg.NodeName, ncfg.DataDir, ncfg.Standalone = "bench", dir+"/raft", true
	dcfg := dispatch.DefaultConfig()
	dcfg.HashSize = 14
	var dests []dispatch.Destination
	for i := 1; i <= 3; i++ {
		d, err := dispatch.NewDestination(1, fmt.Sprintf("sip:127.0.0.1:%d", 5080+i), 0, 0, fmt.Sprintf("duid=gw%d;maxload=1000000", i))
		if err != nil {
			b.Fatal(err)
		}
		dests = append(dests, d)
	}
	cfg := Config{Node: ncfg, Dispatcher: &dcfg, Actors: actors.Options{Logger: discardLog,
		LoadReplication: actors.LoadCommitSync, PendingFile: dir + "/load-pending"}}
	reg, node, err := Start(context.Background(), cfg, &benchSource{sets: dispatch.BuildSets(dests)}, discardLog)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := node.Close(); err != nil {
			b.Error(err)
		}
		reg.Stop()
	})
	return reg, node
}

// cpuNanos is the CPU time (user + system) this process has used.
func cpuNanos(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchCalls runs b.N calls through reg from conc goroutines, each call
// doing step(callID), and reports the process CPU per call: on a shared
// machine that is steadier than ns/op, and it is what the SIPp A/B measures.
func benchCalls(b *testing.B, conc int, prefix string, step func(ctx context.Context, callID string) error) {
	var next atomic.Int64
	ctx := context.Background()
	errs := make(chan error, conc)
	cpu0 := cpuNanos(b)
	b.ResetTimer()
	for range conc {
		go func() {
			for {
				i := next.Add(1)
				if i > int64(b.N) {
					errs <- nil
					return
				}
				if err := step(ctx, prefix+strconv.FormatInt(i, 10)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range conc {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNanos(b)-cpu0)/1e3/float64(b.N), "cpu-µs/op")
}

func inviteReq(callID string) *dispatch.Request {
	return &dispatch.Request{Method: "INVITE", CallID: callID, RURI: "sip:100@127.0.0.1", Proto: "udp"}
}

// BenchmarkLoadAdd is one algorithm-10 INVITE's Select on the durable single
// node: the pick, its reservation, the CmdLoadAdd proposed, group-committed
// (fsync), applied through the FSM and the set actor, and the reply. conc=1
// is the commit latency of a lone call; conc=64 is many calls in flight, as
// under SIPp load, where group commit shares each fsync.
func BenchmarkLoadAdd(b *testing.B) {
	for _, conc := range []int{1, 64} {
		b.Run("conc="+strconv.Itoa(conc), func(b *testing.B) {
			reg, _ := startBenchNode(b)
			benchCalls(b, conc, "add-", func(ctx context.Context, id string) error {
				_, err := reg.Select(ctx, 1, dispatch.AlgCallLoad, inviteReq(id), 0)
				return err
			})
		})
	}
}

// BenchmarkLoadConfirmRemove is the rest of a call's load commands: b.N
// calls already have their entries; each is confirmed (its 2xx) and removed
// (its BYE) through the load queue, the pending-load file and raft, until
// every command has committed.
func BenchmarkLoadConfirmRemove(b *testing.B) {
	reg, _ := startBenchNode(b)
	ctx := context.Background()
	ids := make([]string, b.N)
	for i := range ids {
		ids[i] = "cr-" + strconv.Itoa(i)
		if _, err := reg.Select(ctx, 1, dispatch.AlgCallLoad, inviteReq(ids[i]), 0); err != nil {
			b.Fatal(err)
		}
	}
	cpu0 := cpuNanos(b)
	b.ResetTimer()
	for _, id := range ids {
		reg.LoadConfirm(1, id)
		reg.LoadRemove(1, id)
	}
	waitLoadsAndReport(b, reg, cpu0)
}

// BenchmarkLoadCall is a whole call's load path as the stateful proxy drives
// it, 64 calls in flight: Select (add committed), LoadConfirm at the 2xx,
// LoadRemove at the BYE; the timer stops once every command has committed.
func BenchmarkLoadCall(b *testing.B) {
	reg, _ := startBenchNode(b)
	cpu0 := cpuNanos(b)
	benchCalls(b, 64, "call-", func(ctx context.Context, id string) error {
		if _, err := reg.Select(ctx, 1, dispatch.AlgCallLoad, inviteReq(id), 0); err != nil {
			return err
		}
		reg.LoadConfirm(1, id)
		reg.LoadRemove(1, id)
		return nil
	})
	b.StartTimer()
	waitLoadsAndReport(b, reg, cpu0)
}

// BenchmarkLoadCallPaced offers calls at a fixed rate, as SIPp does, so
// that group commit sees what a proxy sees at that rate (few commands per
// raft entry) rather than 64 calls always waiting: each call is its Select,
// then 20 ms later (the 180 and 200) its LoadConfirm, and its LoadRemove
// (the BYE) at once. ns/op is the pace; cpu-µs/op is the cost per call,
// entries/op the raft entries (group commits) per call, and p50/p99 the
// time an INVITE's Select waits for its entry to commit.
func BenchmarkLoadCallPaced(b *testing.B) {
	for _, rate := range []int{400, 800} {
		b.Run("rate="+strconv.Itoa(rate), func(b *testing.B) {
			reg, node := startBenchNode(b)
			before := node.Stats()
			ctx := context.Background()
			errs := make(chan error, b.N)
			lat := make([]time.Duration, b.N)
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			cpu0 := cpuNanos(b)
			b.ResetTimer()
			for i := range b.N {
				<-tick.C
				go func() {
					id := "paced-" + strconv.Itoa(i)
					t0 := time.Now()
					_, err := reg.Select(ctx, 1, dispatch.AlgCallLoad, inviteReq(id), 0)
					lat[i] = time.Since(t0)
					if err == nil {
						time.Sleep(20 * time.Millisecond)
						reg.LoadConfirm(1, id)
						reg.LoadRemove(1, id)
					}
					errs <- err
				}()
			}
			for range b.N {
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
			}
			waitLoadsAndReport(b, reg, cpu0)
			b.ReportMetric(float64(node.Stats().Entries-before.Entries)/float64(b.N), "entries/op")
			slices.Sort(lat)
			b.ReportMetric(float64(lat[b.N/2].Microseconds()), "p50-select-µs")
			b.ReportMetric(float64(lat[b.N*99/100].Microseconds()), "p99-select-µs")
		})
	}
}

// waitLoadsAndReport waits until every queued load command has committed,
// stops the timer and reports the process CPU per op since cpu0.
func waitLoadsAndReport(b *testing.B, reg *actors.Registry, cpu0 int64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := reg.WaitLoads(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNanos(b)-cpu0)/1e3/float64(b.N), "cpu-µs/op")
}
