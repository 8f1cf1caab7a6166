package actors

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// snapshotEntries is the call-load table size of the snapshot benchmarks:
// the 1,000,000 concurrent calls measured in docs/benchmarks.md ("Raft
// snapshot and restore of 1,000,000 call-load entries").
const snapshotEntries = 1_000_000

// loadedRegistry returns a replicated registry whose set 1 holds n confirmed
// call-load entries, applied as raft would apply them, with 36-byte Call-IDs
// (a UUID, as many user agents send).
func loadedRegistry(b *testing.B, n int) *Registry {
	b.Helper()
	r, _ := newReplicated(b, threeGateways(), Options{})
	at := time.Unix(1_700_000_000, 0).UnixNano()
	uris := []string{"sip:127.0.0.1:5081", "sip:127.0.0.1:5082", "sip:127.0.0.1:5083"}
	for i := range n {
		id := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		for _, k := range []dispatch.CommandKind{dispatch.CmdLoadAdd, dispatch.CmdLoadConfirm} {
			c := dispatch.Command{Kind: k, At: at, Set: 1, CallID: id, URI: uris[i%3]}
			if _, err := r.Apply(c); err != nil {
				b.Fatal(err)
			}
		}
	}
	return r
}

// BenchmarkSnapshotRestore1M takes the raft snapshot of 1,000,000 call-load
// entries through Registry.Snapshot (what the cluster applier hands raft) and
// restores it into another registry through Registry.Restore (a follower
// catching up, or a restart), reporting bytes and nanoseconds per entry.
func BenchmarkSnapshotRestore1M(b *testing.B) {
	ctx := context.Background()
	src := loadedRegistry(b, snapshotEntries)
	snap, err := src.Snapshot(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			if snap, err = src.Snapshot(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(snap))/snapshotEntries, "bytes/entry")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/snapshotEntries, "ns/entry")
	})
	b.Run("restore", func(b *testing.B) {
		dst, _ := newReplicated(b, threeGateways(), Options{})
		for b.Loop() {
			if err := dst.Restore(snap); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/snapshotEntries, "ns/entry")
		st, err := dst.Status(ctx)
		if err != nil || st[0].Calls != snapshotEntries {
			b.Fatalf("restored %v entries (%v), want %d", st, err, snapshotEntries)
		}
	})
}
