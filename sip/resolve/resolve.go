// Package resolve finds where a SIP destination named by a host name is
// reached: RFC 3263 (NAPTR, then SRV, then A/AAAA) for a name without a
// port, A/AAAA for one with a port, with RFC 2782 priority and weight
// selection among SRV targets, and a cache that keeps each answer for its TTL.
// The proxy sends through it and matches from_set sources against it
// (docs/proxy.md#destinations-named-by-host-name).
//
// It talks DNS itself (github.com/miekg/dns): Go's net package has no NAPTR
// lookup, and the nameserver must be settable for tests.
package resolve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Config configures a Resolver. The zero value of each field means its default.
type Config struct {
	// Servers are the nameservers, "host:port", asked in order. Default:
	// those of /etc/resolv.conf, else 127.0.0.1:53 (as the C library).
	Servers []string
	// Timeout bounds one query to one server. Default 2 s.
	Timeout time.Duration
	// TTL, when > 0, is how long every answer is kept, whatever its records
	// say (Kamailio's ds_dns_ttl). 0: the smallest TTL of the records used.
	TTL time.Duration
	// NegativeTTL is how long a failed lookup is remembered before the name
	// is asked again; a name that had an answer keeps it meanwhile. Default 30 s.
	NegativeTTL time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand returns a random number in [0, n) for the RFC 2782 weighted
	// choice. Default math/rand/v2's IntN.
	Rand func(n int) int
	// Logger receives refresh failures. Default slog.Default().
	Logger *slog.Logger
	// HostsFile is read before DNS for a name's addresses, as the C
	// library's resolver does (Kamailio resolves through it). Default
	// /etc/hosts; "-" = none (tests).
	HostsFile string
}

// Validate reports a bad field.
func (c *Config) Validate() error {
	var errs []error
	for _, s := range c.Servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			errs = append(errs, fmt.Errorf("resolve: server %q: want host:port", s))
		}
	}
	if c.Timeout < 0 || c.TTL < 0 || c.NegativeTTL < 0 {
		errs = append(errs, errors.New("resolve: durations must not be negative"))
	}
	return errors.Join(errs...)
}

func (c *Config) setDefaults() {
	if len(c.Servers) == 0 {
		if cc, err := dns.ClientConfigFromFile("/etc/resolv.conf"); err == nil {
			for _, s := range cc.Servers {
				c.Servers = append(c.Servers, net.JoinHostPort(s, cc.Port))
			}
		}
		if len(c.Servers) == 0 {
			c.Servers = []string{"127.0.0.1:53"}
		}
	}
	if c.Timeout == 0 {
		c.Timeout = 2 * time.Second
	}
	if c.NegativeTTL == 0 {
		c.NegativeTTL = 30 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Rand == nil {
		c.Rand = rand.IntN
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.HostsFile == "" {
		c.HostsFile = "/etc/hosts"
	}
}

// Name is what is looked up: a SIP URI's host, port and transport.
type Name struct {
	Host string // host name or IP literal, without brackets
	// Port is the URI's port; 0 = none given, so NAPTR and SRV are asked
	// (RFC 3263 §4.2).
	Port int
	// Transport is the URI's transport parameter, lower case ("udp", "tcp",
	// "tls"); "" = none given, so NAPTR decides (RFC 3263 §4.1).
	Transport string
	// Secure is a sips: URI: only TLS targets, default port 5061.
	Secure bool
}

func (n Name) String() string {
	s := n.Host
	if n.Port != 0 {
		s = net.JoinHostPort(n.Host, fmt.Sprint(n.Port))
	}
	if n.Transport != "" {
		s += ";transport=" + n.Transport
	}
	if n.Secure {
		s = "sips:" + s
	}
	return s
}

// Target is one place a name leads to.
type Target struct {
	Addr      netip.Addr
	Port      int
	Transport string // udp, tcp or tls
}

// srvTarget is one SRV record with the addresses of its target.
type srvTarget struct {
	priority, weight uint16
	port             int
	transport        string
	addrs            []netip.Addr
}

// answer is a cached result: the targets in SRV order (one entry without
// priority and weight for a plain A/AAAA answer).
type answer struct {
	targets []srvTarget
	expires time.Time
	err     error // the last lookup failed; targets may still hold an older answer
}

type entry struct {
	mu         sync.Mutex
	ans        *answer
	refreshing bool
	ready      chan struct{} // closed when the first lookup ends
}

// Resolver looks names up and caches the answers. Safe for concurrent use.
type Resolver struct {
	cfg    Config
	client *dns.Client
	mu     sync.Mutex
	cache  map[Name]*entry
}

// New returns a Resolver for cfg.
func New(cfg Config) (*Resolver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	return &Resolver{cfg: cfg, client: &dns.Client{Timeout: cfg.Timeout}, cache: map[Name]*entry{}}, nil
}

// Lookup returns the targets of n in the order to try them: SRV priority,
// then RFC 2782's weighted random order within a priority, drawn anew on
// each call; the addresses of one target in DNS order. A fresh cached answer
// is used as is; an expired one is returned while a background lookup
// replaces it; only a name never answered waits for DNS (within ctx).
func (r *Resolver) Lookup(ctx context.Context, n Name) ([]Target, error) {
	if ip, err := netip.ParseAddr(n.Host); err == nil {
		return []Target{{Addr: ip.Unmap(), Port: n.defaultPort(), Transport: n.defaultTransport()}}, nil
	}
	e, created := r.entry(n)
	if created {
		go r.fill(e, n, true)
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	e.mu.Lock()
	ans := e.ans
	if !r.cfg.Now().Before(ans.expires) && !e.refreshing {
		e.refreshing = true
		go r.refresh(e, n)
	}
	e.mu.Unlock()
	if len(ans.targets) == 0 {
		return nil, ans.err
	}
	return r.order(ans.targets), nil
}

// Cached returns every address n's last answer holds, in SRV order
// (priority, then heavier first), without asking DNS; nil when n was never
// answered. An expired answer still counts: it is what was last known.
func (r *Resolver) Cached(n Name) []Target {
	if ip, err := netip.ParseAddr(n.Host); err == nil {
		return []Target{{Addr: ip.Unmap(), Port: n.defaultPort(), Transport: n.defaultTransport()}}
	}
	r.mu.Lock()
	e := r.cache[n]
	r.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	ans := e.ans
	e.mu.Unlock()
	if ans == nil {
		return nil
	}
	return flatten(ans.targets)
}

// Refresh looks n up now, whatever the cache holds (a load or the refresh
// timer); a failure keeps the previous answer.
func (r *Resolver) Refresh(ctx context.Context, n Name) error {
	if _, err := netip.ParseAddr(n.Host); err == nil {
		return nil
	}
	e, created := r.entry(n)
	if created {
		r.fill(e, n, false)
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.ans.err
	}
	<-e.ready
	ans := r.query(ctx, n)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.ans = r.merge(e.ans, ans)
	return ans.err
}

// Keep drops every cached name not in names (destinations that left the list).
func (r *Resolver) Keep(names []Name) {
	keep := make(map[Name]bool, len(names))
	for _, n := range names {
		keep[n] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for n := range r.cache {
		if !keep[n] {
			delete(r.cache, n)
		}
	}
}

// entry returns n's cache entry, creating it (created true: the caller
// fills it).
func (r *Resolver) entry(n Name) (*entry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.cache[n]; e != nil {
		return e, false
	}
	e := &entry{ready: make(chan struct{})}
	r.cache[n] = e
	return e, true
}

// fill runs the first lookup of a new entry; waiters see it through ready.
// It does not use a caller's ctx: every caller waiting for the name shares
// the answer, and Config.Timeout bounds each query. A failure is logged when
// logFail (no caller gets the error to log).
func (r *Resolver) fill(e *entry, n Name, logFail bool) {
	ans := r.query(context.Background(), n)
	if ans.err != nil && logFail {
		r.cfg.Logger.Warn("dns: name not resolved", "name", n.String(), "err", ans.err)
	}
	e.mu.Lock()
	e.ans = ans
	e.mu.Unlock()
	close(e.ready)
}

func (r *Resolver) refresh(e *entry, n Name) {
	ans := r.query(context.Background(), n)
	if ans.err != nil {
		r.cfg.Logger.Warn("dns: refresh failed; keeping the last answer", "name", n.String(), "err", ans.err)
	}
	e.mu.Lock()
	e.ans = r.merge(e.ans, ans)
	e.refreshing = false
	e.mu.Unlock()
}

// merge keeps the old targets when the new lookup failed.
func (r *Resolver) merge(old, ans *answer) *answer {
	if ans.err == nil || old == nil || len(old.targets) == 0 {
		return ans
	}
	return &answer{targets: old.targets, expires: ans.expires, err: ans.err}
}

// query runs the RFC 3263 steps for n and stamps the answer's expiry.
func (r *Resolver) query(ctx context.Context, n Name) *answer {
	targets, ttl, err := r.rfc3263(ctx, n)
	now := r.cfg.Now()
	if err == nil && len(targets) == 0 {
		err = fmt.Errorf("resolve %s: no address", n)
	}
	if err != nil {
		return &answer{err: err, expires: now.Add(r.cfg.NegativeTTL)}
	}
	if r.cfg.TTL > 0 {
		ttl = r.cfg.TTL
	}
	// A TTL of 0 would send every request's lookup back to DNS.
	return &answer{targets: targets, expires: now.Add(max(ttl, minTTL))}
}

// minTTL is the shortest time an answer is kept.
const minTTL = time.Second

func (n Name) defaultTransport() string {
	switch {
	case n.Transport != "":
		return n.Transport
	case n.Secure:
		return "tls"
	}
	return "udp"
}

func (n Name) defaultPort() int {
	if n.Port != 0 {
		return n.Port
	}
	if n.Secure || n.Transport == "tls" {
		return 5061
	}
	return 5060
}

// srvService is the SRV prefix of a transport (RFC 3263 §4.1).
var srvService = map[string]string{"udp": "_sip._udp.", "tcp": "_sip._tcp.", "tls": "_sips._tcp."}

// naptrService is the transport of a NAPTR service field (RFC 3263 §4.1).
var naptrService = map[string]string{"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}

// rfc3263 is RFC 3263 §4: with a port, A/AAAA only; else NAPTR (when no
// transport is given), then SRV, then A/AAAA on the name itself.
func (r *Resolver) rfc3263(ctx context.Context, n Name) ([]srvTarget, time.Duration, error) {
	host := dns.Fqdn(n.Host)
	if n.Port == 0 {
		var tried []string
		if n.Transport == "" {
			ts, ttl, err := r.viaNAPTR(ctx, n, host)
			if err != nil || len(ts) > 0 {
				return ts, ttl, err
			}
			// No NAPTR: SRV for each transport the URI allows (§4.1).
			tried = []string{"udp", "tcp", "tls"}
			if n.Secure {
				tried = []string{"tls"}
			}
		} else {
			tried = []string{n.Transport}
		}
		for _, tr := range tried {
			svc, ok := srvService[tr]
			if !ok {
				continue
			}
			ts, ttl, err := r.srv(ctx, svc+host, tr)
			if err != nil || len(ts) > 0 {
				return ts, ttl, err
			}
		}
	}
	addrs, ttl, err := r.addrs(ctx, host)
	if err != nil || len(addrs) == 0 {
		return nil, 0, err
	}
	return []srvTarget{{port: n.defaultPort(), transport: n.defaultTransport(), addrs: addrs}}, ttl, nil
}

// viaNAPTR follows the NAPTR records of host (RFC 3263 §4.1, RFC 3403):
// the "s" records of SIP services this proxy speaks, in order and
// preference; the first whose SRV name yields targets wins. No usable
// NAPTR: no targets, no error.
func (r *Resolver) viaNAPTR(ctx context.Context, n Name, host string) ([]srvTarget, time.Duration, error) {
	rrs, ttl, err := r.ask(ctx, host, dns.TypeNAPTR)
	if err != nil {
		return nil, 0, err
	}
	var recs []*dns.NAPTR
	for _, rr := range rrs {
		if na, ok := rr.(*dns.NAPTR); ok && strings.EqualFold(na.Flags, "s") {
			tr, known := naptrService[strings.ToUpper(na.Service)]
			if known && (!n.Secure || tr == "tls") {
				recs = append(recs, na)
			}
		}
	}
	sortNAPTR(recs)
	for _, na := range recs {
		ts, sttl, err := r.srv(ctx, dns.Fqdn(na.Replacement), naptrService[strings.ToUpper(na.Service)])
		if err != nil {
			return nil, 0, err
		}
		if len(ts) > 0 {
			return ts, min(ttl, sttl), nil
		}
	}
	return nil, 0, nil
}

func sortNAPTR(recs []*dns.NAPTR) {
	for i := 1; i < len(recs); i++ {
		for j := i; j > 0 && (recs[j].Order < recs[j-1].Order ||
			recs[j].Order == recs[j-1].Order && recs[j].Preference < recs[j-1].Preference); j-- {
			recs[j], recs[j-1] = recs[j-1], recs[j]
		}
	}
}

// srv looks up an SRV name and the addresses of each target; targets
// without an address are left out. "." as the only target means the
// service is not offered (RFC 2782): no targets.
func (r *Resolver) srv(ctx context.Context, name, transport string) ([]srvTarget, time.Duration, error) {
	rrs, ttl, err := r.ask(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, 0, err
	}
	var out []srvTarget
	for _, rr := range rrs {
		s, ok := rr.(*dns.SRV)
		if !ok || s.Target == "." {
			continue
		}
		addrs, attl, err := r.addrs(ctx, s.Target)
		if err != nil {
			return nil, 0, err
		}
		if len(addrs) == 0 {
			continue
		}
		ttl = min(ttl, attl)
		out = append(out, srvTarget{priority: s.Priority, weight: s.Weight, port: int(s.Port), transport: transport, addrs: addrs})
	}
	sortSRV(out)
	return out, ttl, nil
}

// sortSRV orders by priority, then heavier first (a stable order for
// Cached; Lookup draws the weighted order per call).
func sortSRV(ts []srvTarget) {
	for i := 1; i < len(ts); i++ {
		for j := i; j > 0 && (ts[j].priority < ts[j-1].priority ||
			ts[j].priority == ts[j-1].priority && ts[j].weight > ts[j-1].weight); j-- {
			ts[j], ts[j-1] = ts[j-1], ts[j]
		}
	}
}

// hostsTTL is how long an answer from the hosts file is kept.
const hostsTTL = 30 * time.Second

// addrs gives host's addresses from the hosts file, else its A, then AAAA
// records.
func (r *Resolver) addrs(ctx context.Context, host string) ([]netip.Addr, time.Duration, error) {
	if a := lookupHosts(r.cfg.HostsFile, host); len(a) > 0 {
		return a, hostsTTL, nil
	}
	var out []netip.Addr
	ttl := time.Duration(1<<63 - 1)
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, rttl, err := r.ask(ctx, host, t)
		if err != nil {
			return nil, 0, err
		}
		for _, rr := range rrs {
			var ip net.IP
			switch a := rr.(type) {
			case *dns.A:
				ip = a.A
			case *dns.AAAA:
				ip = a.AAAA
			}
			if addr, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, addr.Unmap())
				ttl = min(ttl, rttl)
			}
		}
	}
	return out, ttl, nil
}

// ask sends one question to the servers in turn until one answers, over
// UDP, then TCP when the answer was truncated. NXDOMAIN and an empty answer
// are no records, no error; the TTL is the smallest of the records of type
// t (CNAMEs are followed by the server).
func (r *Resolver) ask(ctx context.Context, name string, t uint16) ([]dns.RR, time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, t)
	m.RecursionDesired = true
	var lastErr error
	for _, s := range r.cfg.Servers {
		in, _, err := r.client.ExchangeContext(ctx, m, s)
		if err == nil && in.Truncated {
			tcp := &dns.Client{Net: "tcp", Timeout: r.cfg.Timeout}
			in, _, err = tcp.ExchangeContext(ctx, m, s)
		}
		if err != nil {
			lastErr = err
			continue
		}
		switch in.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
		default:
			lastErr = fmt.Errorf("%s %s: %s from %s", dns.TypeToString[t], name, dns.RcodeToString[in.Rcode], s)
			continue
		}
		var rrs []dns.RR
		ttl := time.Duration(1<<63 - 1)
		for _, rr := range in.Answer {
			if rr.Header().Rrtype == t {
				rrs = append(rrs, rr)
				ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
			}
		}
		return rrs, ttl, nil
	}
	return nil, 0, fmt.Errorf("dns %s %s: %w", dns.TypeToString[t], name, lastErr)
}

// flatten lists every address of ts in order.
func flatten(ts []srvTarget) []Target {
	var out []Target
	for _, t := range ts {
		for _, a := range t.addrs {
			out = append(out, Target{Addr: a, Port: t.port, Transport: t.transport})
		}
	}
	return out
}

// order is RFC 2782's target order: priorities ascending; within one, a
// target is drawn with probability weight/sum (zero-weight targets first in
// the running sum, so they are drawn only rarely), then the next from the
// rest, and so on.
func (r *Resolver) order(ts []srvTarget) []Target {
	if len(ts) == 1 {
		return flatten(ts)
	}
	out := make([]srvTarget, 0, len(ts))
	for i := 0; i < len(ts); {
		j := i
		for j < len(ts) && ts[j].priority == ts[i].priority {
			j++
		}
		out = append(out, weighted(ts[i:j], r.cfg.Rand)...)
		i = j
	}
	return flatten(out)
}

// weighted orders one priority's targets by RFC 2782's selection.
func weighted(group []srvTarget, rnd func(int) int) []srvTarget {
	// Zero weights first, as RFC 2782 asks; the rest keep their order.
	rest := make([]srvTarget, 0, len(group))
	for _, t := range group {
		if t.weight == 0 {
			rest = append(rest, t)
		}
	}
	for _, t := range group {
		if t.weight != 0 {
			rest = append(rest, t)
		}
	}
	out := make([]srvTarget, 0, len(group))
	for len(rest) > 0 {
		sum := 0
		for _, t := range rest {
			sum += int(t.weight)
		}
		pick := rnd(sum + 1) // uniform in [0, sum]
		k, run := 0, 0
		for i, t := range rest {
			run += int(t.weight)
			if run >= pick {
				k = i
				break
			}
		}
		out = append(out, rest[k])
		rest = append(rest[:k], rest[k+1:]...)
	}
	return out
}

// lookupHosts returns the addresses a hosts file gives host (a fully
// qualified name), in file order; nil when the file is missing or has none.
// It is read on each call: lookups are rare (once per TTL and name) and an
// edit takes effect without a restart.
func lookupHosts(path, host string) []netip.Addr {
	if path == "-" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	want := strings.TrimSuffix(host, ".")
	var out []netip.Addr
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		ip, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		for _, name := range f[1:] {
			if strings.EqualFold(strings.TrimSuffix(name, "."), want) {
				out = append(out, ip.Unmap())
				break
			}
		}
	}
	return out
}
