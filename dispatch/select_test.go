package dispatch

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// gw is a destination for fixtures; the tests build sets by hand so that
// they do not depend on the list parser.
func gw(i int) Destination {
	return Destination{SetID: 1, URI: fmt.Sprintf("sip:gw%d.example.com", i), Scheme: "sip", Host: fmt.Sprintf("gw%d.example.com", i)}
}

// gws returns n plain destinations.
func gws(n int) []Destination {
	ds := make([]Destination, n)
	for i := range ds {
		ds[i] = gw(i)
	}
	return ds
}

// newSet builds a SetState with a fixed random seed.
func newSet(t testing.TB, cfg Config, dests []Destination) *SetState {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	s, err := NewSetState(Set{ID: 1, Dests: dests}, &cfg, rand.New(rand.NewPCG(1, 2)))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// setFlags sets destination state directly (Mark belongs to another file)
// and recomputes what depends on it, as Mark does.
func setFlags(s *SetState, f Flags, idx ...int) {
	for _, i := range idx {
		s.State[i].Flags = f
	}
	s.stateChanged()
}

func mustSelect(t testing.TB, s *SetState, req *Request, alg Algorithm, limit int) Selection {
	t.Helper()
	sel, err := s.Select(req, alg, limit, t0, nil)
	if err != nil {
		t.Fatalf("Select(%s): %v", alg, err)
	}
	return sel
}

func cfgWith(mod func(*Config)) Config {
	c := DefaultConfig()
	if mod != nil {
		mod(&c)
	}
	return c
}

func TestSelectHashAlgorithms(t *testing.T) {
	// Expected indexes come from the Kamailio hash vectors (hash_test.go)
	// modulo the hash range.
	abc := &Request{Method: "INVITE", CallID: "abc"}
	from := func(uri string) *Request { return &Request{Method: "INVITE", CallID: "x", From: uri} }
	failover := func(c *Config) { c.Flags = FlagsFailover }
	useDefault := func(c *Config) { c.UseDefault = 1 }
	tests := []struct {
		name     string
		mod      func(*Config)
		n        int
		dead     []int
		alg      Algorithm
		req      *Request
		limit    int
		want     []int
		wantHash uint32
	}{
		{"callid n4", nil, 4, nil, AlgHashCallID, abc, 0, []int{2}, 7167810},
		{"callid trimmed", nil, 4, nil, AlgHashCallID, &Request{CallID: " abc\r\n"}, 0, []int{2}, 7167810},
		{"callid n3", nil, 3, nil, AlgHashCallID, abc, 0, []int{0}, 7167810},
		{"callid next active", nil, 4, []int{2}, AlgHashCallID, abc, 0, []int{3}, 7167810},
		{"callid next wraps", nil, 4, []int{2, 3}, AlgHashCallID, abc, 0, []int{0}, 7167810},
		{"from host", nil, 3, nil, AlgHashFrom, from("sip:alice@atlanta.com"), 0, []int{2}, 1053853112},
		{"from port 5080", nil, 4, nil, AlgHashFrom, from("sip:alice@atlanta.com:5080"), 0, []int{1}, 3776158421},
		{"from default port dropped", nil, 4, nil, AlgHashFrom, from("sip:alice@atlanta.com:5060"), 0, []int{0}, 1053853112},
		{"from user only", func(c *Config) { c.Flags = FlagsHashUserOnly }, 5, nil, AlgHashFrom, from("sip:alice@atlanta.com:5080"), 0, []int{4}, 1834153949},
		{"to", nil, 4, nil, AlgHashTo, &Request{To: "sip:bob@biloxi.com"}, 0, []int{2}, 3860513530},
		{"ruri", nil, 3, nil, AlgHashRURI, &Request{RURI: "sip:alice@atlanta.com:5080;transport=tcp"}, 0, []int{2}, 3776158421},
		{"auth user part", nil, 5, nil, AlgHashAuthUser, &Request{AuthUser: "alice@atlanta.com"}, 0, []int{4}, 1834153949},
		{"pvar", func(c *Config) { c.HashPVar = "$fU@$ci" }, 5, nil, AlgHashPVar, &Request{CallID: "abc", From: "sip:alice@atlanta.com"}, 0, []int{3}, 3612078678},
		{"use_default range n-1", useDefault, 5, nil, AlgHashCallID, abc, 0, []int{2}, 7167810},
		{"use_default 5080", useDefault, 5, nil, AlgHashFrom, from("sip:alice@atlanta.com:5080"), 0, []int{1}, 3776158421},
		{"use_default last resort", useDefault, 5, []int{0, 1, 2, 3}, AlgHashCallID, abc, 0, []int{4}, 7167810},
		{"failover wraps", failover, 4, []int{3}, AlgHashCallID, abc, 0, []int{2, 0, 1}, 7167810},
		{"failover limit", failover, 4, []int{3}, AlgHashCallID, abc, 2, []int{2, 0}, 7167810},
		{"failover limit 1", failover, 4, nil, AlgHashCallID, abc, 1, []int{2}, 7167810},
		{"failover default last", func(c *Config) { failover(c); useDefault(c) }, 5, nil, AlgHashCallID, abc, 0, []int{2, 3, 0, 1, 4}, 7167810},
		{"failover default limited", func(c *Config) { failover(c); useDefault(c) }, 5, nil, AlgHashCallID, abc, 3, []int{2, 3, 0}, 7167810},
		{"failover default dead", func(c *Config) { failover(c); useDefault(c) }, 5, []int{4, 0}, AlgHashCallID, abc, 0, []int{2, 3, 1}, 7167810},
		{"failover only default", func(c *Config) { failover(c); useDefault(c) }, 5, []int{0, 1, 2, 3}, AlgHashCallID, abc, 0, []int{4}, 7167810},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, cfgWith(tt.mod), gws(tt.n))
			setFlags(s, FlagInactive, tt.dead...)
			sel := mustSelect(t, s, tt.req, tt.alg, tt.limit)
			if !slices.Equal(sel.Order, tt.want) {
				t.Errorf("Order = %v, want %v", sel.Order, tt.want)
			}
			if sel.Hash != tt.wantHash {
				t.Errorf("Hash = %d, want %d", sel.Hash, tt.wantHash)
			}
			if sel.SetID != 1 || sel.Alg != tt.alg || sel.Parallel {
				t.Errorf("Selection = %+v", sel)
			}
		})
	}
}

func TestSelectErrors(t *testing.T) {
	tests := []struct {
		name    string
		mod     func(*Config)
		n       int
		dead    []int
		flag    Flags
		alg     Algorithm
		req     *Request
		wantErr error
	}{
		{"empty set", nil, 0, nil, 0, AlgRoundRobin, &Request{}, ErrNoDestination},
		{"bad from", nil, 3, nil, 0, AlgHashFrom, &Request{From: "garbage"}, ErrNoHashKey},
		{"from without host", nil, 3, nil, 0, AlgHashFrom, &Request{From: "sip:alice@"}, ErrNoHashKey},
		{"no hash_pvar", nil, 3, nil, 0, AlgHashPVar, &Request{}, ErrNoHashKey},
		{"blank hash_pvar", func(c *Config) { c.HashPVar = "$hdr(X-Blank)" }, 3, nil, 0, AlgHashPVar,
			&Request{Headers: HeaderList{{"X-Blank", " \t"}}}, ErrNoHashKey},
		{"default dead too", func(c *Config) { c.UseDefault = 1 }, 3, []int{0, 1, 2}, FlagInactive, AlgHashCallID, &Request{CallID: "abc"}, ErrNoDestination},
		{"single default dead", func(c *Config) { c.UseDefault = 1 }, 1, []int{0}, FlagInactive, AlgRoundRobin, &Request{}, ErrNoDestination},
	}
	// Every algorithm, known or not, fails the same way when all are down,
	// whether inactive or disabled.
	for alg := Algorithm(-1); alg <= MaxAlgorithm+1; alg++ {
		for _, f := range []Flags{FlagInactive, FlagDisabled, FlagInactive | FlagProbing} {
			tests = append(tests, struct {
				name    string
				mod     func(*Config)
				n       int
				dead    []int
				flag    Flags
				alg     Algorithm
				req     *Request
				wantErr error
			}{fmt.Sprintf("all %s %s", f.Letters(), alg), func(c *Config) { c.Flags = FlagsFailover; c.HashPVar = "$ci" }, 3, []int{0, 1, 2}, f, alg,
				&Request{Method: "INVITE", CallID: "abc", From: "sip:a@b", To: "sip:a@b", RURI: "sip:a@b", AuthUser: "a"}, ErrNoDestination})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, cfgWith(tt.mod), gws(tt.n))
			setFlags(s, tt.flag, tt.dead...)
			sel, err := s.Select(tt.req, tt.alg, 0, t0, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v (selection %v)", err, tt.wantErr, sel.Order)
			}
			if len(sel.Order) != 0 {
				t.Errorf("failed selection has Order %v", sel.Order)
			}
		})
	}
	s := newSet(t, DefaultConfig(), gws(2))
	setFlags(s, FlagDisabled, 0, 1)
	_, err := s.Select(&Request{}, AlgFirst, 0, t0, nil)
	if want := "set 1: first: no active destination"; err == nil || err.Error() != want {
		t.Errorf("error text %q, want %q", err, want)
	}
}

func TestTryingIsSelectable(t *testing.T) {
	s := newSet(t, DefaultConfig(), gws(3))
	setFlags(s, FlagTrying|FlagProbing, 0)
	if sel := mustSelect(t, s, &Request{}, AlgFirst, 0); sel.Order[0] != 0 {
		t.Fatalf("trying destination skipped: %v", sel.Order)
	}
}

// sequence runs k selections and returns the chosen indexes.
func sequence(t *testing.T, s *SetState, req *Request, alg Algorithm, k int) []int {
	t.Helper()
	var got []int
	for range k {
		got = append(got, mustSelect(t, s, req, alg, 0).Order[0])
	}
	return got
}

func TestRoundRobin(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Config)
		dest []Destination
		dead []int
		alg  Algorithm
		req  *Request
		want []int
	}{
		{"rotates", nil, gws(3), nil, AlgRoundRobin, &Request{}, []int{0, 1, 2, 0, 1, 2}},
		{"skips inactive", nil, gws(4), []int{1}, AlgRoundRobin, &Request{}, []int{0, 2, 3, 0, 2, 3}},
		{"skips two", nil, gws(4), []int{0, 2}, AlgRoundRobin, &Request{}, []int{1, 3, 1, 3}},
		{"use_default excluded", func(c *Config) { c.UseDefault = 1 }, gws(4), nil, AlgRoundRobin, &Request{}, []int{0, 1, 2, 0, 1, 2}},
		{"authuser without user", nil, gws(3), nil, AlgHashAuthUser, &Request{}, []int{0, 1, 2, 0}},
		{"authuser blank user", nil, gws(3), []int{1}, AlgHashAuthUser, &Request{AuthUser: "@realm"}, []int{0, 2, 0, 2}},
		{"rr-serial equal priorities", nil, withPriorities(gws(3), 5, 5, 5), nil, AlgRRSerial, &Request{}, []int{0, 1, 2, 0}},
		{"rr-serial mixed priorities", nil, withPriorities(gws(3), 9, 5, 5), nil, AlgRRSerial, &Request{}, []int{0, 0, 0}},
		{"rr-serial serial skips dead", nil, withPriorities(gws(3), 9, 5, 5), []int{0}, AlgRRSerial, &Request{}, []int{1, 1, 1}},
		// Kamailio's rrserial flag is the common priority, so all-zero means serial.
		{"rr-serial zero priorities", nil, gws(3), nil, AlgRRSerial, &Request{}, []int{0, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, cfgWith(tt.mod), tt.dest)
			setFlags(s, FlagInactive, tt.dead...)
			if got := sequence(t, s, tt.req, tt.alg, len(tt.want)); !slices.Equal(got, tt.want) {
				t.Errorf("sequence %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRoundRobinRevive(t *testing.T) {
	s := newSet(t, DefaultConfig(), gws(3))
	setFlags(s, FlagInactive, 1)
	got := sequence(t, s, &Request{}, AlgRoundRobin, 2) // 0, 2
	setFlags(s, 0, 1)
	got = append(got, sequence(t, s, &Request{}, AlgRoundRobin, 4)...)
	if want := []int{0, 2, 0, 1, 2, 0}; !slices.Equal(got, want) {
		t.Fatalf("sequence %v, want %v", got, want)
	}
}

func TestRoundRobinFailover(t *testing.T) {
	s := newSet(t, cfgWith(func(c *Config) { c.Flags = FlagsFailover }), gws(4))
	setFlags(s, FlagInactive, 2)
	want := [][]int{{0, 1, 3}, {1, 3, 0}, {3, 0, 1}, {0, 1, 3}}
	for i, w := range want {
		if got := mustSelect(t, s, &Request{}, AlgRoundRobin, 0).Order; !slices.Equal(got, w) {
			t.Errorf("selection %d: %v, want %v", i, got, w)
		}
	}
}

func withPriorities(ds []Destination, p ...int) []Destination {
	for i := range p {
		ds[i].Priority = p[i]
	}
	return ds
}

func withAttrs(ds []Destination, f func(i int, a *Attrs)) []Destination {
	for i := range ds {
		f(i, &ds[i].Attrs)
	}
	return ds
}

// shares returns the percentage of k selections each destination got.
func shares(t *testing.T, s *SetState, alg Algorithm, k int, req func(i int) *Request) []float64 {
	t.Helper()
	out := make([]float64, len(s.Dests))
	buf := make([]int, 0, len(s.Dests))
	for i := range k {
		sel, err := s.Select(req(i), alg, 0, t0, buf)
		if err != nil {
			t.Fatal(err)
		}
		out[sel.Order[0]] += 100 / float64(k)
	}
	return out
}

func sameReq(int) *Request { return &Request{Method: "INVITE"} }

func checkShares(t *testing.T, got, want []float64, tol float64) {
	t.Helper()
	for i := range want {
		if math.Abs(got[i]-want[i]) > tol {
			t.Errorf("shares %.1f, want %v ± %v", got, want, tol)
			return
		}
	}
}

func TestWeight(t *testing.T) {
	weights := func(w ...int) []Destination {
		return withAttrs(gws(len(w)), func(i int, a *Attrs) { a.Weight = w[i] })
	}
	tests := []struct {
		name  string
		dests []Destination
		dead  []int
		want  []float64
	}{
		{"50/30/20", weights(50, 30, 20), nil, []float64{50, 30, 20}},
		{"rest to the last", weights(10, 20), nil, []float64{10, 90}},
		{"over 100 truncated", weights(60, 60, 10), nil, []float64{60, 40, 0}},
		{"first without weight", weights(0, 50, 50), nil, []float64{100, 0, 0}},
		{"dead share goes next", weights(50, 30, 20), []int{0}, []float64{0, 80, 20}},
		{"dead last wraps", weights(50, 30, 20), []int{2}, []float64{70, 30, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, DefaultConfig(), tt.dests)
			setFlags(s, FlagInactive, tt.dead...)
			checkShares(t, shares(t, s, AlgWeight, 10000, sameReq), tt.want, 2)
		})
	}
}

func TestWeightTableIsShuffled(t *testing.T) {
	s := newSet(t, DefaultConfig(), withAttrs(gws(2), func(i int, a *Attrs) { a.Weight = 50 }))
	got := sequence(t, s, &Request{}, AlgWeight, 50)
	if slices.Equal(got[:50], slices.Repeat([]int{0}, 50)) {
		t.Fatal("the first 50 selections all went to the first destination: table not shuffled")
	}
}

func TestRelativeWeight(t *testing.T) {
	rw := func(w ...int) []Destination {
		return withAttrs(gws(len(w)), func(i int, a *Attrs) { a.RWeight = w[i] })
	}
	tests := []struct {
		name  string
		dests []Destination
		dead  []int
		want  []float64
	}{
		{"50/30/20", rw(50, 30, 20), nil, []float64{50, 30, 20}},
		{"relative, not percent", rw(1, 3), nil, []float64{25, 75}},
		// Recomputed over live ones: 50*100/70 = 71 slots, 20*100/70 = 28
		// plus the rounding slot for the last one filled.
		{"recomputed on death", rw(50, 30, 20), []int{1}, []float64{71, 0, 29}},
		{"no rweight: first entry", rw(0, 0, 0), nil, []float64{100, 0, 0}},
		{"no rweight, first dead", rw(0, 0, 0), []int{0}, []float64{0, 100, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, DefaultConfig(), tt.dests)
			setFlags(s, FlagInactive, tt.dead...)
			checkShares(t, shares(t, s, AlgRelativeWeight, 10000, sameReq), tt.want, 2)
		})
	}
}

func TestRelativeWeightFollowsStateChanges(t *testing.T) {
	s := newSet(t, DefaultConfig(), withAttrs(gws(3), func(i int, a *Attrs) { a.RWeight = 10 * (i + 1) }))
	setFlags(s, FlagInactive, 2)
	checkShares(t, shares(t, s, AlgRelativeWeight, 10000, sameReq), []float64{33, 67, 0}, 2)
	setFlags(s, 0, 2)
	checkShares(t, shares(t, s, AlgRelativeWeight, 10000, sameReq), []float64{16.7, 33.3, 50}, 2)
}

func TestRandom(t *testing.T) {
	s := newSet(t, DefaultConfig(), gws(5))
	checkShares(t, shares(t, s, AlgRandom, 20000, sameReq), []float64{20, 20, 20, 20, 20}, 2)
	// A dead destination's draws go to the next one, as in Kamailio.
	setFlags(s, FlagInactive, 1)
	checkShares(t, shares(t, s, AlgRandom, 20000, sameReq), []float64{20, 0, 40, 20, 20}, 2)
}

func TestFirstAndUnknown(t *testing.T) {
	for _, alg := range []Algorithm{AlgFirst, 17, 64, -1} {
		s := newSet(t, cfgWith(func(c *Config) { c.Flags = FlagsFailover }), gws(4))
		if got := mustSelect(t, s, &Request{}, alg, 0).Order; !slices.Equal(got, []int{0, 1, 2, 3}) {
			t.Errorf("%s: %v, want [0 1 2 3]", alg, got)
		}
		setFlags(s, FlagInactive, 0, 2)
		if got := mustSelect(t, s, &Request{}, alg, 0).Order; !slices.Equal(got, []int{1, 3}) {
			t.Errorf("%s with 0 and 2 dead: %v, want [1 3]", alg, got)
		}
	}
}

func TestCallLoad(t *testing.T) {
	invite := &Request{Method: "INVITE", CallID: "c1"}
	bye := &Request{Method: "BYE", CallID: "c1"}
	failover := func(c *Config) { c.Flags = FlagsFailover; c.HashSize = 4 }
	tests := []struct {
		name    string
		mod     func(*Config)
		loads   []int
		maxload []int
		dead    []int
		req     *Request
		want    []int
		wantErr error
	}{
		{"least loaded", nil, []int{2, 1, 0, 5}, nil, nil, invite, []int{2}, nil},
		{"tie to lowest index", nil, []int{2, 1, 1, 5}, nil, nil, invite, []int{1}, nil},
		{"dead skipped", nil, []int{2, 1, 1, 5}, nil, []int{1}, invite, []int{2}, nil},
		{"at maxload skipped", nil, []int{2, 1, 3, 5}, []int{0, 1, 0, 0}, nil, invite, []int{0}, nil},
		{"all at maxload", nil, []int{1, 2, 3}, []int{1, 2, 3}, nil, invite, nil, ErrNoDestination},
		{"over maxload", nil, []int{4, 2}, []int{3, 1}, nil, invite, nil, ErrNoDestination},
		{"non-INVITE takes first", nil, []int{5, 0, 0}, nil, nil, bye, []int{0}, nil},
		{"non-INVITE ignores maxload", nil, []int{5, 0, 0}, []int{5, 0, 0}, []int{}, bye, []int{0}, nil},
		{"non-INVITE first active", nil, []int{5, 0, 0}, nil, []int{0}, bye, []int{1}, nil},
		{"failover skips maxload", failover, []int{2, 1, 3, 0}, []int{0, 0, 3, 0}, nil, invite, []int{3, 0, 1}, nil},
		{"failover by load order of set", failover, []int{1, 0, 2}, nil, nil, invite, []int{1, 2, 0}, nil},
		{"use_default not least", func(c *Config) { failover(c); c.UseDefault = 1 }, []int{5, 5, 5, 0}, nil, nil, invite, []int{0, 1, 2, 3}, nil},
		{"use_default last resort", func(c *Config) { c.UseDefault = 1 }, []int{5, 5, 5, 9}, nil, []int{0, 1, 2}, invite, []int{3}, nil},
		{"use_default at maxload", func(c *Config) { c.UseDefault = 1 }, []int{5, 5, 5, 9}, []int{0, 0, 0, 9}, []int{0, 1, 2}, invite, nil, ErrNoDestination},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := gws(len(tt.loads))
			for i := range tt.maxload {
				ds[i].Attrs.MaxLoad = tt.maxload[i]
			}
			s := newSet(t, cfgWith(tt.mod), ds)
			for i, l := range tt.loads {
				s.State[i].Load = l
			}
			setFlags(s, FlagInactive, tt.dead...)
			sel, err := s.Select(tt.req, AlgCallLoad, 0, t0, nil)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !slices.Equal(sel.Order, tt.want) {
				t.Errorf("Order = %v, want %v", sel.Order, tt.want)
			}
			for i, l := range tt.loads {
				if s.State[i].Load != l {
					t.Errorf("Select changed load of %d to %d", i, s.State[i].Load)
				}
			}
		})
	}
}

func TestParallel(t *testing.T) {
	tests := []struct {
		name  string
		mod   func(*Config)
		n     int
		dead  []int
		limit int
		want  []int
	}{
		{"all", nil, 3, nil, 0, []int{0, 1, 2}},
		{"active only", nil, 4, []int{0, 2}, 0, []int{1, 3}},
		{"limit", nil, 4, nil, 2, []int{0, 1}},
		{"failover flag irrelevant", func(c *Config) { c.Flags = FlagsFailover }, 3, []int{1}, 0, []int{0, 2}},
		{"default is a branch", func(c *Config) { c.UseDefault = 1 }, 3, nil, 0, []int{0, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, cfgWith(tt.mod), gws(tt.n))
			setFlags(s, FlagInactive, tt.dead...)
			sel := mustSelect(t, s, &Request{}, AlgParallel, tt.limit)
			if !sel.Parallel || !slices.Equal(sel.Order, tt.want) {
				t.Errorf("selection %+v, want parallel %v", sel, tt.want)
			}
		})
	}
	s := newSet(t, DefaultConfig(), gws(2))
	if sel := mustSelect(t, s, &Request{}, AlgFirst, 0); sel.Parallel {
		t.Error("non-parallel algorithm marked Parallel")
	}
}

func TestLatency(t *testing.T) {
	type lat struct{ est, avg float64 }
	tests := []struct {
		name  string
		prio  []int
		lat   []lat
		cc    []int
		dead  []int
		fo    bool
		k     int
		want  [][]int
		limit int
	}{
		// p=10: latency 5 keeps 10; 50 gives 10-5 = 5; 200 gives max(1, 10-20).
		{"ranked by latency", []int{10, 10, 10}, []lat{{200, 0}, {50, 0}, {5, 0}}, nil, nil, true, 2,
			[][]int{{2, 1, 0}, {2, 1, 0}}, 0},
		{"equal latency round-robins", []int{10, 10, 10}, []lat{{5, 0}, {5, 0}, {5, 0}}, nil, nil, true, 4,
			[][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}, {0, 1, 2}}, 0},
		{"no failover list", []int{10, 10, 10}, []lat{{200, 0}, {50, 0}, {5, 0}}, nil, nil, false, 1,
			[][]int{{2}}, 0},
		{"limit", []int{10, 10, 10}, []lat{{200, 0}, {50, 0}, {5, 0}}, nil, nil, true, 1,
			[][]int{{2, 1}}, 2},
		{"dead skipped", []int{10, 10, 10}, []lat{{200, 0}, {50, 0}, {5, 0}}, nil, []int{2}, true, 1,
			[][]int{{1, 0}}, 0},
		// cc: congestion = estimate - average; 100-95 = 5 keeps priority 10,
		// while a plain 50 ms estimate drops to 5.
		{"congestion control", []int{10, 10}, []lat{{50, 0}, {100, 95}}, []int{0, 1}, nil, true, 1,
			[][]int{{1, 0}}, 0},
		{"priority still counts", []int{20, 10}, []lat{{60, 0}, {0, 0}}, nil, nil, true, 1,
			[][]int{{0, 1}}, 0}, // 20 - 60/20 = 17 > 10
		{"zero priority unadjusted", []int{0, 0}, []lat{{900, 0}, {0, 0}}, nil, nil, true, 2,
			[][]int{{0, 1}, {1, 0}}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ds := withPriorities(gws(len(tt.prio)), tt.prio...)
			for i := range tt.cc {
				ds[i].Attrs.CC = tt.cc[i]
			}
			s := newSet(t, cfgWith(func(c *Config) {
				if tt.fo {
					c.Flags = FlagsFailover
				}
			}), ds)
			for i, l := range tt.lat {
				s.State[i].Latency.Est, s.State[i].Latency.Avg = l.est, l.avg
			}
			setFlags(s, FlagInactive, tt.dead...)
			for i := range tt.k {
				if got := mustSelect(t, s, &Request{}, AlgLatency, tt.limit).Order; !slices.Equal(got, tt.want[i]) {
					t.Errorf("selection %d: %v, want %v", i, got, tt.want[i])
				}
			}
		})
	}
	s := newSet(t, cfgWith(func(c *Config) { c.UseDefault = 1; c.Flags = FlagsFailover }), gws(3))
	if got := mustSelect(t, s, &Request{}, AlgLatency, 0).Order; !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("use_default: %v, want [0 1 2]", got)
	}
	setFlags(s, FlagInactive, 0, 1)
	if got := mustSelect(t, s, &Request{}, AlgLatency, 0).Order; !slices.Equal(got, []int{2}) {
		t.Errorf("use_default last resort: %v, want [2]", got)
	}
}

func TestPriorityGroups(t *testing.T) {
	// List order has the higher priority value first; algorithm 15 prefers
	// the LOWEST value, as Kamailio's (SRV convention).
	mk := func() []Destination {
		ds := withPriorities(gws(4), 2, 1, 1, 0)
		return withAttrs(ds, func(i int, a *Attrs) { a.Weight = []int{100, 75, 25, 0}[i] })
	}
	tests := []struct {
		name  string
		dests []Destination
		dead  []int
		want  []float64
	}{
		{"best group only", mk(), nil, []float64{0, 0, 0, 100}},
		{"weighted within group", mk(), []int{3}, []float64{0, 75, 25, 0}},
		{"next group when best dead", mk(), []int{1, 2, 3}, []float64{100, 0, 0, 0}},
		{"survivor takes the group", mk(), []int{1, 3}, []float64{0, 0, 100, 0}},
		{"even without weights", withPriorities(gws(3), 1, 1, 1), nil, []float64{33.3, 33.3, 33.3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSet(t, DefaultConfig(), tt.dests)
			setFlags(s, FlagInactive, tt.dead...)
			checkShares(t, shares(t, s, AlgPriorityGroups, 10000, sameReq), tt.want, 2)
		})
	}
}

func callReq(i int) *Request {
	return &Request{Method: "INVITE", CallID: fmt.Sprintf("%08x-%d@client.example.com", i*2654435761, i)}
}

func TestHashFallbackRehash(t *testing.T) {
	const calls = 20000
	for _, tc := range []struct {
		name string
		dead []int
		live []int
	}{
		{"one of four", []int{1}, []int{0, 2, 3}},
		{"two of four (n and k share factors)", []int{1, 3}, []int{0, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []string{"next", "rehash"} {
				s := newSet(t, cfgWith(func(c *Config) { c.HashFallback = mode }), gws(4))
				before := make([]int, calls)
				for i := range calls {
					before[i] = mustSelect(t, s, callReq(i), AlgHashCallID, 0).Order[0]
				}
				setFlags(s, FlagInactive, tc.dead...)
				moved := map[int]int{}
				nMoved := 0
				for i := range calls {
					after := mustSelect(t, s, callReq(i), AlgHashCallID, 0).Order[0]
					if slices.Contains(tc.dead, after) {
						t.Fatalf("%s: dead destination %d selected", mode, after)
					}
					if !slices.Contains(tc.dead, before[i]) {
						if after != before[i] {
							t.Fatalf("%s: call %d of live destination %d moved to %d", mode, i, before[i], after)
						}
						continue
					}
					moved[after]++
					nMoved++
				}
				if mode == "rehash" {
					// The dead share spreads evenly over the live ones.
					for _, l := range tc.live {
						share := float64(moved[l]) / float64(nMoved)
						if want := 1 / float64(len(tc.live)); math.Abs(share-want) > 0.05 {
							t.Errorf("rehash: %d got %.2f of the moved calls, want %.2f", l, share, want)
						}
					}
				} else if len(tc.dead) == 1 && moved[2] != nMoved {
					// Kamailio's next: all of 1's calls land on 2.
					t.Errorf("next: moved calls went to %v, want all to 2", moved)
				}
			}
		})
	}
}

func TestRendezvous(t *testing.T) {
	const calls = 12000
	s := newSet(t, DefaultConfig(), gws(5))
	before := make([]int, calls)
	count := make([]float64, 5)
	for i := range calls {
		before[i] = mustSelect(t, s, callReq(i), AlgRendezvous, 0).Order[0]
		count[before[i]] += 100.0 / calls
	}
	checkShares(t, count, []float64{20, 20, 20, 20, 20}, 3)

	setFlags(s, FlagInactive, 2)
	count = make([]float64, 5)
	for i := range calls {
		got := mustSelect(t, s, callReq(i), AlgRendezvous, 0).Order[0]
		if before[i] != 2 && got != before[i] {
			t.Fatalf("call %d of live gateway %d moved to %d", i, before[i], got)
		}
		count[got] += 100.0 / calls
	}
	checkShares(t, count, []float64{25, 25, 0, 25, 25}, 3)

	setFlags(s, 0, 2)
	for i := range calls {
		if got := mustSelect(t, s, callReq(i), AlgRendezvous, 0).Order[0]; got != before[i] {
			t.Fatalf("call %d did not return to %d after revival (got %d)", i, before[i], got)
		}
	}
}

func TestRendezvousWeighted(t *testing.T) {
	w := []int{10, 20, 30, 40}
	s := newSet(t, DefaultConfig(), withAttrs(gws(4), func(i int, a *Attrs) { a.Weight = w[i] }))
	checkShares(t, shares(t, s, AlgRendezvous, 20000, callReq), []float64{10, 20, 30, 40}, 2)
	setFlags(s, FlagInactive, 3)
	checkShares(t, shares(t, s, AlgRendezvous, 20000, callReq), []float64{16.7, 33.3, 50, 0}, 2)

	// In a weighted set a destination without weight is a last resort.
	s = newSet(t, DefaultConfig(), withAttrs(gws(3), func(i int, a *Attrs) { a.Weight = []int{50, 0, 50}[i] }))
	checkShares(t, shares(t, s, AlgRendezvous, 4000, callReq), []float64{50, 0, 50}, 3)
	setFlags(s, FlagInactive, 0, 2)
	checkShares(t, shares(t, s, AlgRendezvous, 1000, callReq), []float64{0, 100, 0}, 0.001)
}

func TestRendezvousIsDeterministic(t *testing.T) {
	// Two nodes with different random sources must agree
	// (docs/cluster.md#what-is-replicated).
	cfg := DefaultConfig()
	a, err := NewSetState(Set{ID: 1, Dests: gws(7)}, &cfg, rand.New(rand.NewPCG(1, 1)))
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSetState(Set{ID: 1, Dests: gws(7)}, &cfg, rand.New(rand.NewPCG(9, 9)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		x := mustSelect(t, a, callReq(i), AlgRendezvous, 0)
		y := mustSelect(t, b, callReq(i), AlgRendezvous, 0)
		if x.Order[0] != y.Order[0] || x.Hash != y.Hash {
			t.Fatalf("call %d: %v/%d vs %v/%d", i, x.Order, x.Hash, y.Order, y.Hash)
		}
	}
}

func TestRendezvousFailoverOrder(t *testing.T) {
	// The failover list is the score ranking: the second entry is where the
	// call goes when the first dies, and the default one comes last.
	cfg := cfgWith(func(c *Config) { c.Flags = FlagsFailover; c.UseDefault = 1 })
	for i := range 300 {
		s := newSet(t, cfg, gws(5))
		full := mustSelect(t, s, callReq(i), AlgRendezvous, 0).Order
		if len(full) != 5 || full[4] != 4 {
			t.Fatalf("call %d: order %v, want 4 live then default 4", i, full)
		}
		sorted := slices.Clone(full)
		slices.Sort(sorted)
		if !slices.Equal(sorted, []int{0, 1, 2, 3, 4}) {
			t.Fatalf("call %d: order %v is not a permutation", i, full)
		}
		setFlags(s, FlagInactive, full[0])
		next := mustSelect(t, s, callReq(i), AlgRendezvous, 2).Order
		if !slices.Equal(next, full[1:3]) {
			t.Fatalf("call %d: after %d died got %v, want %v", i, full[0], next, full[1:3])
		}
	}
}

func TestSelectReusesBuffer(t *testing.T) {
	s := newSet(t, cfgWith(func(c *Config) { c.Flags = FlagsFailover }), gws(4))
	buf := make([]int, 0, 8)
	sel := mustSelectBuf(t, s, AlgHashCallID, buf)
	if &sel.Order[:1][0] != &buf[:1][0] {
		t.Fatal("Order does not use buf")
	}
}

func mustSelectBuf(t *testing.T, s *SetState, alg Algorithm, buf []int) Selection {
	t.Helper()
	sel, err := s.Select(&Request{Method: "INVITE", CallID: "abc"}, alg, 0, t0, buf)
	if err != nil {
		t.Fatal(err)
	}
	return sel
}

func TestSelectAllocs(t *testing.T) {
	req := &Request{Method: "INVITE", CallID: "a84b4c76e66710@pc33.atlanta.com", From: "sip:alice@atlanta.com:5080",
		To: "sip:bob@biloxi.com", RURI: "sip:bob@biloxi.com", AuthUser: "alice"}
	cfg := cfgWith(func(c *Config) { c.Flags = FlagsFailover; c.HashPVar = "$fU@$ci" })
	for alg := AlgHashCallID; alg <= MaxAlgorithm; alg++ {
		s := newSet(t, cfg, withAttrs(gws(8), func(i int, a *Attrs) { a.Weight, a.RWeight = 10+i, 10+i }))
		setFlags(s, FlagInactive, 3)
		buf := make([]int, 0, 8)
		n := testing.AllocsPerRun(200, func() {
			if _, err := s.Select(req, alg, 0, t0, buf); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s allocates %v times per Select", alg, n)
		}
	}
}
