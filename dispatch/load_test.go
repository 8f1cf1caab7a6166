package dispatch

import (
	"errors"
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"
)

const loadList = "1 sip:10.0.0.1 0 0 duid=a\n1 sip:10.0.0.2 0 0 duid=b\n1 sip:10.0.0.3 0 0 duid=c\n"

func newLoadSet(t testing.TB) *SetState {
	return newTestSet(t, loadList, func(c *Config) {
		c.HashSize, c.HashInitExpire, c.HashExpire = 8, 60, 3600
	})
}

// checkLoads asserts that every destination's Load equals the number of
// entries pointing at it and is never negative.
func checkLoads(t *testing.T, s *SetState) {
	t.Helper()
	counts := make([]int, len(s.Dests))
	for _, e := range s.LoadEntries(nil) {
		counts[e.Dest]++
	}
	total := 0
	for i, st := range s.State {
		if st.Load < 0 || st.Load != counts[i] {
			t.Fatalf("destination %d: Load %d, entries %d", i, st.Load, counts[i])
		}
		total += st.Load
	}
	if total != s.LoadCount() {
		t.Fatalf("loads sum to %d, table has %d", total, s.LoadCount())
	}
}

func TestLoadLifecycle(t *testing.T) {
	s := newLoadSet(t)
	if err := s.LoadAdd("c1", 0, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadAdd("c2", 0, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadAdd("c3", 2, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.LoadAdd("c1", 1, t0); !errors.Is(err, ErrLoadExists) {
		t.Fatalf("duplicate Call-ID: %v", err)
	}
	for _, i := range []int{-1, 3} {
		if err := s.LoadAdd("cx", i, t0); !errors.Is(err, ErrBadIndex) {
			t.Fatalf("index %d: %v", i, err)
		}
	}
	if got := []int{s.State[0].Load, s.State[1].Load, s.State[2].Load}; got[0] != 2 || got[1] != 0 || got[2] != 1 {
		t.Fatalf("loads %v", got)
	}
	checkLoads(t, s)

	if !s.LoadConfirm("c1", t0.Add(30*time.Second)) || s.LoadConfirm("nope", t0) {
		t.Fatal("confirm")
	}
	// At +61s the unconfirmed c2 and c3 have expired (initexpire 60), c1 not.
	if n := s.LoadExpire(t0.Add(60 * time.Second)); n != 0 {
		t.Fatalf("expired %d at exactly the limit", n)
	}
	if n := s.LoadExpire(t0.Add(61 * time.Second)); n != 2 {
		t.Fatalf("expired %d, want 2", n)
	}
	checkLoads(t, s)
	es := s.LoadEntries(nil)
	if len(es) != 1 || es[0].CallID != "c1" || !es[0].Confirmed || es[0].Dest != 0 ||
		!es[0].Expires.Equal(t0.Add(30*time.Second+time.Hour)) {
		t.Fatalf("entries %+v", es)
	}
	// The confirmed call lives ds_hash_expire from its 2xx.
	if n := s.LoadExpire(t0.Add(time.Hour + 30*time.Second)); n != 0 {
		t.Fatal("confirmed entry expired early")
	}
	if !s.LoadRemove("c1") || s.LoadRemove("c1") {
		t.Fatal("remove, then second remove")
	}
	checkLoads(t, s)
	if s.LoadCount() != 0 || s.State[0].Load != 0 {
		t.Fatalf("left %d entries", s.LoadCount())
	}
}

func TestLoadEntriesSortedAndRestore(t *testing.T) {
	s := newLoadSet(t)
	for i, id := range []string{"zz", "aa", "mm"} {
		if err := s.LoadAdd(id, i, t0); err != nil {
			t.Fatal(err)
		}
	}
	s.LoadConfirm("mm", t0)
	es := s.LoadEntries([]LoadEntry{{CallID: "keep"}})
	if len(es) != 4 || es[0].CallID != "keep" || es[1].CallID != "aa" || es[2].CallID != "mm" || es[3].CallID != "zz" {
		t.Fatalf("entries %+v", es)
	}
	r := newLoadSet(t)
	for _, e := range es[1:] {
		if err := r.LoadRestore(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.LoadRestore(es[1]); !errors.Is(err, ErrLoadExists) {
		t.Fatalf("restore duplicate: %v", err)
	}
	if err := r.LoadRestore(LoadEntry{CallID: "x", Dest: 9}); !errors.Is(err, ErrBadIndex) {
		t.Fatalf("restore bad index: %v", err)
	}
	got := r.LoadEntries(nil)
	for i := range got {
		if got[i] != es[i+1] {
			t.Fatalf("restored %+v, want %+v", got[i], es[i+1])
		}
	}
	checkLoads(t, r)
}

// TestLoadRandomOps drives the table with random operations and checks after
// every step that loads equal entry counts and never go negative, then that
// everything returns to zero.
func TestLoadRandomOps(t *testing.T) {
	s := newLoadSet(t)
	rng := rand.New(rand.NewPCG(42, 7))
	now := t0
	live := map[string]bool{}
	var adds, dups, confirms, removes, moves, expired int
	for step := 0; step < 20000; step++ {
		now = now.Add(time.Duration(rng.IntN(2000)) * time.Millisecond)
		id := "call-" + strconv.Itoa(rng.IntN(400))
		switch op := rng.IntN(10); {
		case op < 4:
			err := s.LoadAdd(id, rng.IntN(len(s.Dests)), now)
			switch {
			case live[id] && !errors.Is(err, ErrLoadExists):
				t.Fatalf("step %d: duplicate add of %s: %v", step, id, err)
			case !live[id] && err != nil:
				t.Fatalf("step %d: add %s: %v", step, id, err)
			case err == nil:
				adds++
			default:
				dups++
			}
			live[id] = true
		case op < 5:
			if s.LoadMove(id, rng.IntN(len(s.Dests))) != live[id] {
				t.Fatalf("step %d: move %s disagrees with model", step, id)
			}
			if live[id] {
				moves++
			}
		case op < 6:
			if s.LoadConfirm(id, now) != live[id] {
				t.Fatalf("step %d: confirm %s disagrees with model", step, id)
			}
			if live[id] {
				confirms++
			}
		case op < 9:
			if s.LoadRemove(id) != live[id] {
				t.Fatalf("step %d: remove %s disagrees with model", step, id)
			}
			if live[id] {
				removes++
			}
			delete(live, id)
		default:
			expired += s.LoadExpire(now)
			live = map[string]bool{}
			for _, e := range s.LoadEntries(nil) {
				live[e.CallID] = true
			}
		}
		checkLoads(t, s)
		if s.LoadCount() != len(live) {
			t.Fatalf("step %d: table %d entries, model %d", step, s.LoadCount(), len(live))
		}
	}
	if adds == 0 || dups == 0 || confirms == 0 || removes == 0 || moves == 0 || expired == 0 {
		t.Fatalf("operations not all exercised: add %d dup %d confirm %d remove %d move %d expire %d",
			adds, dups, confirms, removes, moves, expired)
	}
	// Everything ends: confirmed entries last an hour after their 2xx.
	if n := s.LoadExpire(now.Add(time.Hour + time.Second)); n != len(live) {
		t.Fatalf("final expiry removed %d of %d", n, len(live))
	}
	checkLoads(t, s)
	for i, st := range s.State {
		if st.Load != 0 {
			t.Fatalf("destination %d keeps load %d", i, st.Load)
		}
	}
}

// TestNewLoadTableHint checks that ds_hash_size 24 does not preallocate 2^24
// slots for every set.
func TestNewLoadTableHint(t *testing.T) {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	lt := newLoadTable(24)
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 32<<20 {
		t.Fatalf("newLoadTable(24) allocated %d MB", grew>>20)
	}
	lt.m["x"] = loadEntry{}
	if len(newLoadTable(0).m) != 0 || len(lt.m) != 1 {
		t.Fatal("tables not usable")
	}
}

func BenchmarkLoadAddRemove(b *testing.B) {
	s := newLoadSet(b)
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "a84b4c76e66710@pc33.atlanta.com-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := ids[i&1023]
		if err := s.LoadAdd(id, i%3, t0); err != nil {
			b.Fatal(err)
		}
		if !s.LoadRemove(id) {
			b.Fatal("remove")
		}
	}
}

// BenchmarkLoadAdd measures adds into a table holding 100k calls.
func BenchmarkLoadAdd(b *testing.B) {
	s := newLoadSet(b)
	const live = 100000
	ids := make([]string, live+b.N)
	for i := range ids {
		ids[i] = "call-" + strconv.Itoa(i)
	}
	for i := 0; i < live; i++ {
		if err := s.LoadAdd(ids[i], i%3, t0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.LoadAdd(ids[live+i], i%3, t0); err != nil {
			b.Fatal(err)
		}
		if !s.LoadRemove(ids[i]) { // keep the table at 100k
			b.Fatal("remove")
		}
	}
}

func BenchmarkLoadExpire100k(b *testing.B) {
	s := newLoadSet(b)
	for i := 0; i < 100000; i++ {
		if err := s.LoadAdd("call-"+strconv.Itoa(i), i%3, t0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if n := s.LoadExpire(t0); n != 0 { // a sweep that finds nothing to do
			b.Fatal(n)
		}
	}
}

// BenchmarkLoadMemory reports the heap bytes one call-load entry costs in a
// table of a million calls (Call-IDs of 32 bytes, counted in the figure).
func BenchmarkLoadMemory(b *testing.B) {
	const calls = 1000000
	for n := 0; n < b.N; n++ {
		s := newLoadSet(b)
		id := []byte("0123456789abcdef0123456789abcdef")
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := 0; i < calls; i++ {
			for j, v := 0, i; j < 8; j, v = j+1, v>>4 {
				id[j] = "0123456789abcdef"[v&15]
			}
			if err := s.LoadAdd(string(id), i%3, t0); err != nil {
				b.Fatal(err)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/calls, "B/entry")
		runtime.KeepAlive(s)
	}
}
