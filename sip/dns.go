package sip

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/resolve"
)

// DNSConfig is how destinations named by a host name are resolved: the
// ds_dns_* keys of dispatcher (docs/configuration.md#dispatcher).
type DNSConfig struct {
	// Mode is ds_dns_mode's bits (dispatch.DNSMode*): when from_set's
	// addresses are resolved, and whether through NAPTR/SRV.
	Mode int
	// Interval is ds_dns_interval, the period of the DNSModeTimer refresh.
	Interval time.Duration
	// TTL is ds_dns_ttl: when > 0, how long every answer is kept.
	TTL time.Duration
	// MatchAll is ds_dns_match_all: from_set matches every address of a
	// name, not only the first.
	MatchAll bool
	// Servers are the nameservers, host:port; nil = /etc/resolv.conf.
	Servers []string
	// Now is the resolver's clock; nil = time.Now (tests set it).
	Now func() time.Time
}

// DefaultDNSConfig returns the defaults of docs/configuration.md.
func DefaultDNSConfig() DNSConfig {
	return DNSConfig{Mode: dispatch.DNSModeInit, Interval: 600 * time.Second}
}

// maxMatchAddrs bounds the addresses from_set compares per destination, as
// Kamailio's DS_DNS_MAX_ADDRS.
const maxMatchAddrs = 32

// DestResolver resolves the destinations named by a host name, for sending
// (RFC 3263, always) and for from_set (as ds_dns_mode says). It is the
// actors.HostResolver of the registry and the Server's resolver, so both
// see the same cache. Safe for concurrent use.
type DestResolver struct {
	cfg    DNSConfig
	res    *resolve.Resolver
	log    *slog.Logger
	loaded chan struct{} // a new list waits to be resolved
	// ticker starts Run's DNSModeTimer clock (a test's hand-fired one).
	ticker func(time.Duration) (<-chan time.Time, func())

	mu    sync.Mutex
	names []resolve.Name // of the installed destinations
}

// NewDestResolver returns a resolver for cfg; Run starts its load and
// timer lookups.
func NewDestResolver(cfg DNSConfig, log *slog.Logger) (*DestResolver, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultDNSConfig().Interval // as Kamailio, which warns and uses 600 s
	}
	res, err := resolve.New(resolve.Config{Servers: cfg.Servers, TTL: cfg.TTL, Now: cfg.Now, Logger: log})
	if err != nil {
		return nil, err
	}
	return &DestResolver{cfg: cfg, res: res, log: log, loaded: make(chan struct{}, 1), ticker: realTicker}, nil
}

func realTicker(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// sendName is the RFC 3263 input of a destination: a URI without a port
// goes through SRV (and NAPTR without a transport).
func sendName(d *dispatch.Destination) resolve.Name {
	return resolve.Name{Host: d.Host, Port: d.Port, Transport: d.Transport, Secure: d.Scheme == "sips"}
}

// matchName is what from_set resolves: the RFC 3263 targets with
// DNSModeSRV, else the name's own A/AAAA records at the URI's port.
func (r *DestResolver) matchName(d *dispatch.Destination) resolve.Name {
	n := sendName(d)
	if r.cfg.Mode&dispatch.DNSModeSRV == 0 {
		n.Port = d.EffectivePort()
	}
	return n
}

// isName reports whether d is named by a host name rather than an address.
func isName(d *dispatch.Destination) bool {
	_, err := netip.ParseAddr(d.Host)
	return err != nil
}

// Target is where a request to d goes: the first of its RFC 3263 targets
// (SRV order drawn anew for each call). Only a name never resolved before
// waits for DNS, within ctx.
func (r *DestResolver) Target(ctx context.Context, d *dispatch.Destination) (resolve.Target, error) {
	ts, err := r.res.Lookup(ctx, sendName(d))
	if err != nil {
		return resolve.Target{}, err
	}
	return ts[0], nil
}

// Endpoints implements actors.HostResolver: the addresses from_set matches
// for d. With DNSModeAlways an expired answer is looked up again (and a
// name never resolved is waited for); otherwise the last answer is used as
// it is. A destination flagged no-DNS (16) matches nothing, nor does any
// with none of the bits 1, 2 and 4, as in Kamailio.
func (r *DestResolver) Endpoints(d *dispatch.Destination) []actors.Endpoint {
	if d.Flags&dispatch.FlagNoDNS != 0 || r.cfg.Mode&(dispatch.DNSModeInit|dispatch.DNSModeAlways|dispatch.DNSModeTimer) == 0 {
		return nil // as Kamailio, which then never resolves the name for matching
	}
	n := r.matchName(d)
	if r.cfg.Mode&dispatch.DNSModeAlways != 0 {
		// Refreshes an expired answer; Cached then gives the stable order
		// (Lookup's is drawn anew on each call).
		_, _ = r.res.Lookup(context.Background(), n)
	}
	ts := r.res.Cached(n)
	limit := 1
	if r.cfg.MatchAll {
		limit = maxMatchAddrs
	}
	ts = ts[:min(len(ts), limit)]
	out := make([]actors.Endpoint, len(ts))
	for i, t := range ts {
		out[i] = actors.Endpoint{Addr: t.Addr, Port: t.Port, Transport: t.Transport}
	}
	return out
}

// Loaded implements actors.HostResolver: it keeps the cache to the names of
// dests and, with DNSModeInit or DNSModeTimer, has Run resolve them now.
func (r *DestResolver) Loaded(dests []dispatch.Destination) {
	seen := map[resolve.Name]bool{}
	var names []resolve.Name
	for i := range dests {
		d := &dests[i]
		if !isName(d) {
			continue
		}
		for _, n := range []resolve.Name{sendName(d), r.matchName(d)} {
			if !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	r.res.Keep(names)
	r.mu.Lock()
	r.names = names
	r.mu.Unlock()
	if r.cfg.Mode&(dispatch.DNSModeInit|dispatch.DNSModeTimer) != 0 {
		select {
		case r.loaded <- struct{}{}:
		default: // a resolution is already due
		}
	}
}

// Run resolves the installed names after each load (DNSModeInit,
// DNSModeTimer) and every Interval (DNSModeTimer), until ctx ends.
func (r *DestResolver) Run(ctx context.Context) {
	var tick <-chan time.Time
	if r.cfg.Mode&dispatch.DNSModeTimer != 0 {
		var stop func()
		tick, stop = r.ticker(r.cfg.Interval)
		defer stop()
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.loaded:
		case <-tick:
		}
		r.refreshAll(ctx)
	}
}

// refreshAll looks every installed name up again, a few at a time.
func (r *DestResolver) refreshAll(ctx context.Context) {
	r.mu.Lock()
	names := r.names
	r.mu.Unlock()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, n := range names {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := r.res.Refresh(ctx, n); err != nil {
				r.log.Warn("dns: destination not resolved", "name", n.String(), "err", err)
			}
		}()
	}
	wg.Wait()
}

// hostPort is t as host:port for the transport layer.
func hostPort(t resolve.Target) string {
	return netip.AddrPortFrom(t.Addr, uint16(t.Port)).String()
}
