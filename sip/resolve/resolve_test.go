package resolve

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sipdispatch/sipdispatch/sip/resolve/resolvetest"
)

// clock is a settable clock for the cache tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newResolver(t *testing.T, srv *resolvetest.Server, mod func(*Config)) (*Resolver, *clock) {
	t.Helper()
	clk := &clock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	hosts := filepath.Join(t.TempDir(), "hosts")
	if err := os.WriteFile(hosts, []byte("# test\n127.0.0.77  other.test Hosts.Test # comment\n::1 v6.test\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Servers: []string{srv.Addr}, Timeout: 2 * time.Second, Now: clk.Now, HostsFile: hosts}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r, clk
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func target(addr string, port int, tr string) Target {
	return Target{Addr: netip.MustParseAddr(addr), Port: port, Transport: tr}
}

// The RFC 3263 steps: which records are asked for which URI, and where
// the request goes.
func TestRFC3263Steps(t *testing.T) {
	srv := resolvetest.Start(t,
		// NAPTR prefers TCP (order 10) over UDP (order 20).
		`naptr.test. 60 IN NAPTR 20 0 "s" "SIP+D2U" "" _sip._udp.naptr.test.`,
		`naptr.test. 60 IN NAPTR 10 0 "s" "SIP+D2T" "" _sip._tcp.naptr.test.`,
		`naptr.test. 60 IN NAPTR 5 0 "s" "SIP+D2X" "" _sip._x.naptr.test.`, // unknown service: skipped
		"_sip._tcp.naptr.test. 60 IN SRV 10 0 5071 b.test.",
		"_sip._udp.naptr.test. 60 IN SRV 10 0 5070 a.test.",
		"a.test. 60 IN A 127.0.0.21",
		"b.test. 60 IN A 127.0.0.22",
		"b.test. 60 IN AAAA ::1",
		// SRV only, for UDP and TLS.
		"_sip._udp.srv.test. 60 IN SRV 10 0 5080 a.test.",
		"_sips._tcp.srv.test. 60 IN SRV 10 0 5081 b.test.",
		"srv.test. 60 IN A 127.0.0.30",
		// A only.
		"plain.test. 60 IN A 127.0.0.40",
		// A name and an SRV target that the hosts file knows.
		"hosts.test. 60 IN A 127.0.0.99",
		"_sip._udp.hostsrv.test. 60 IN SRV 10 0 5090 hosts.test.",
	)
	tests := []struct {
		name  Name
		want  []Target
		asked map[string]int // "name TYPE" → questions, for the steps that must (not) happen
	}{
		{Name{Host: "naptr.test"}, []Target{target("127.0.0.22", 5071, "tcp"), target("::1", 5071, "tcp")},
			map[string]int{"naptr.test NAPTR": 1, "_sip._tcp.naptr.test SRV": 1, "_sip._udp.naptr.test SRV": 0}},
		// A transport skips NAPTR.
		{Name{Host: "naptr.test", Transport: "udp"}, []Target{target("127.0.0.21", 5070, "udp")},
			map[string]int{"naptr.test NAPTR": 1, "_sip._udp.naptr.test SRV": 1}},
		// No NAPTR: SRV for UDP first.
		{Name{Host: "srv.test"}, []Target{target("127.0.0.21", 5080, "udp")},
			map[string]int{"srv.test NAPTR": 1, "_sip._udp.srv.test SRV": 1, "_sip._tcp.srv.test SRV": 0, "srv.test A": 0}},
		// sips: only TLS.
		{Name{Host: "srv.test", Secure: true}, []Target{target("127.0.0.22", 5081, "tls"), target("::1", 5081, "tls")},
			map[string]int{"_sips._tcp.srv.test SRV": 1, "_sip._udp.srv.test SRV": 1}},
		// A port skips NAPTR and SRV.
		{Name{Host: "srv.test", Port: 5090}, []Target{target("127.0.0.30", 5090, "udp")},
			map[string]int{"srv.test NAPTR": 2, "srv.test A": 1}},
		// No NAPTR, no SRV: A on the name, default port.
		{Name{Host: "plain.test"}, []Target{target("127.0.0.40", 5060, "udp")},
			map[string]int{"_sip._udp.plain.test SRV": 1, "_sip._tcp.plain.test SRV": 1, "_sips._tcp.plain.test SRV": 1, "plain.test A": 1}},
		{Name{Host: "plain.test", Transport: "tls"}, []Target{target("127.0.0.40", 5061, "tls")},
			map[string]int{"_sips._tcp.plain.test SRV": 2}},
		// The hosts file comes before DNS, for a name and for an SRV target.
		{Name{Host: "hosts.test", Port: 5070}, []Target{target("127.0.0.77", 5070, "udp")},
			map[string]int{"hosts.test A": 0}},
		{Name{Host: "hostsrv.test"}, []Target{target("127.0.0.77", 5090, "udp")},
			map[string]int{"_sip._udp.hostsrv.test SRV": 1, "hosts.test A": 0}},
		// An IP is not looked up.
		{Name{Host: "127.0.0.9"}, []Target{target("127.0.0.9", 5060, "udp")}, nil},
		{Name{Host: "::ffff:127.0.0.9", Port: 7}, []Target{target("127.0.0.9", 7, "udp")}, nil},
	}
	r, _ := newResolver(t, srv, nil)
	for _, tt := range tests {
		got, err := r.Lookup(ctx(t), tt.name)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
		for q, n := range tt.asked {
			var name, typ string
			fmt.Sscan(q, &name, &typ)
			if got := srv.Asked(name, typ); got != n {
				t.Errorf("%s: %s asked %d times, want %d", tt.name, q, got, n)
			}
		}
	}
	if _, err := r.Lookup(ctx(t), Name{Host: "missing.test"}); err == nil {
		t.Error("missing.test: no error")
	}
}

// An answer is kept for the smallest TTL of its records; after that the
// expired answer is still used while a background lookup replaces it.
func TestCacheTTL(t *testing.T) {
	srv := resolvetest.Start(t,
		"_sip._udp.gw.test. 30 IN SRV 10 0 5070 a.gw.test.",
		"a.gw.test. 60 IN A 127.0.0.21",
	)
	r, clk := newResolver(t, srv, nil)
	gw := Name{Host: "gw.test"}
	want1 := []Target{target("127.0.0.21", 5070, "udp")}
	if got, err := r.Lookup(ctx(t), gw); err != nil || !slices.Equal(got, want1) {
		t.Fatalf("first lookup: %v %v", got, err)
	}
	srv.Set(t,
		"_sip._udp.gw.test. 30 IN SRV 10 0 5072 b.gw.test.",
		"b.gw.test. 60 IN A 127.0.0.22",
	)
	clk.Add(29 * time.Second)
	if got, _ := r.Lookup(ctx(t), gw); !slices.Equal(got, want1) {
		t.Fatalf("within the TTL: %v", got)
	}
	if n := srv.Asked("_sip._udp.gw.test", "SRV"); n != 1 {
		t.Fatalf("within the TTL the SRV was asked %d times", n)
	}
	clk.Add(time.Second) // the SRV's 30 s are over
	if got, _ := r.Lookup(ctx(t), gw); !slices.Equal(got, want1) {
		t.Fatalf("just expired: want the old answer while it refreshes, got %v", got)
	}
	want2 := []Target{target("127.0.0.22", 5072, "udp")}
	waitFor(t, "the new answer", func() bool {
		got, _ := r.Lookup(ctx(t), gw)
		return slices.Equal(got, want2)
	})
	if got := r.Cached(gw); !slices.Equal(got, want2) {
		t.Errorf("Cached: %v", got)
	}
}

// Config.TTL (ds_dns_ttl) replaces the records' TTL.
func TestCacheFixedTTL(t *testing.T) {
	srv := resolvetest.Start(t, "gw.test. 3600 IN A 127.0.0.21")
	r, clk := newResolver(t, srv, func(c *Config) { c.TTL = 10 * time.Second })
	gw := Name{Host: "gw.test", Port: 5060}
	if _, err := r.Lookup(ctx(t), gw); err != nil {
		t.Fatal(err)
	}
	srv.Set(t, "gw.test. 3600 IN A 127.0.0.22")
	clk.Add(10 * time.Second)
	r.Lookup(ctx(t), gw) // starts the refresh
	waitFor(t, "the refreshed address", func() bool {
		got, _ := r.Lookup(ctx(t), gw)
		return len(got) == 1 && got[0].Addr == netip.MustParseAddr("127.0.0.22")
	})
}

// A failed lookup is remembered for NegativeTTL, and a failed refresh
// keeps the last answer.
func TestCacheFailures(t *testing.T) {
	srv := resolvetest.Start(t, "gw.test. 60 IN A 127.0.0.21")
	r, clk := newResolver(t, srv, func(c *Config) { c.NegativeTTL = 5 * time.Second })
	missing := Name{Host: "missing.test", Port: 5060}
	for range 3 {
		if _, err := r.Lookup(ctx(t), missing); err == nil {
			t.Fatal("no error for a missing name")
		}
	}
	if n := srv.Asked("missing.test", "A"); n != 1 {
		t.Fatalf("missing name asked %d times within NegativeTTL", n)
	}
	clk.Add(5 * time.Second)
	r.Lookup(ctx(t), missing)
	waitFor(t, "the second question", func() bool { return srv.Asked("missing.test", "A") == 2 })

	gw := Name{Host: "gw.test", Port: 5060}
	want := []Target{target("127.0.0.21", 5060, "udp")}
	if _, err := r.Lookup(ctx(t), gw); err != nil {
		t.Fatal(err)
	}
	srv.Set(t) // the name disappears
	if err := r.Refresh(ctx(t), gw); err == nil {
		t.Fatal("Refresh of a vanished name: no error")
	}
	if got, err := r.Lookup(ctx(t), gw); !slices.Equal(got, want) || err != nil {
		t.Fatalf("after a failed refresh: %v %v, want the last answer", got, err)
	}
	r.Keep(nil)
	if got := r.Cached(gw); got != nil {
		t.Fatalf("after Keep(nil): %v", got)
	}
}

// RFC 2782's selection within one priority: the running sums of the weights
// (zero weights first) against a random number in [0, sum].
func TestSRVWeightedOrder(t *testing.T) {
	a := srvTarget{priority: 10, weight: 0, port: 1, addrs: []netip.Addr{netip.MustParseAddr("127.0.0.1")}}
	b := srvTarget{priority: 10, weight: 30, port: 2, addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}
	c := srvTarget{priority: 10, weight: 70, port: 3, addrs: []netip.Addr{netip.MustParseAddr("127.0.0.3")}}
	d := srvTarget{priority: 20, weight: 100, port: 4, addrs: []netip.Addr{netip.MustParseAddr("127.0.0.4")}}
	tests := []struct {
		draws []int // successive random numbers
		want  []int // ports in order
	}{
		// Sums a=0, b=30, c=100: 0 picks a (zero weight, rarely), 1..30 b, 31..100 c.
		{[]int{0, 0, 0, 0}, []int{1, 2, 3, 4}},
		{[]int{1, 0, 0, 0}, []int{2, 1, 3, 4}},
		{[]int{30, 0, 0, 0}, []int{2, 1, 3, 4}},
		{[]int{31, 0, 0, 0}, []int{3, 1, 2, 4}},
		{[]int{100, 30, 0, 0}, []int{3, 2, 1, 4}},
		// Priority 20 comes last whatever is drawn.
		{[]int{100, 1, 0, 0}, []int{3, 2, 1, 4}},
	}
	for _, tt := range tests {
		i := 0
		var sums []int
		r := &Resolver{cfg: Config{Rand: func(n int) int {
			sums = append(sums, n-1)
			v := tt.draws[i]
			i++
			return v
		}}}
		var got []int
		for _, tg := range r.order([]srvTarget{a, b, c, d}) {
			got = append(got, tg.Port)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("draws %v: order %v, want %v", tt.draws, got, tt.want)
		}
		if sums[0] != 100 {
			t.Errorf("first draw over [0, %d], want [0, 100]", sums[0])
		}
	}

	// Over many draws each target comes first in proportion to its weight.
	rng := rand.New(rand.NewPCG(1, 2))
	r := &Resolver{cfg: Config{Rand: rng.IntN}}
	first := map[int]int{}
	const n = 20000
	for range n {
		first[r.order([]srvTarget{a, b, c, d})[0].Port]++
	}
	for port, share := range map[int]float64{1: 1.0 / 101, 2: 30.0 / 101, 3: 70.0 / 101, 4: 0} {
		got := float64(first[port]) / n
		if got < share-0.015 || got > share+0.015 {
			t.Errorf("port %d first %.3f of the time, want %.3f", port, got, share)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
