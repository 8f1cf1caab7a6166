package sip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Proxy modes (docs/configuration.md#proxy).
const (
	ModeStateful  = "stateful"
	ModeStateless = "stateless"
)

// Config is the proxy part of the node configuration (docs/configuration.md:
// listen, advertise, proxy and the ds_ping_* keys of dispatcher).
type Config struct {
	// Listen are the sockets to serve, "proto:host:port" with proto udp, tcp
	// or tls. Port 0 picks a free port (tests); Server.Addrs reports it.
	Listen []string
	// Advertise is host[:port] written into Via and Record-Route instead of
	// the listen address; "" uses the listen address of the transport.
	Advertise string
	// Mode is ModeStateful (transactions, failover) or ModeStateless.
	Mode string
	// RecordRoute adds a Record-Route header to initial requests so that
	// in-dialog requests (BYE) come back through the proxy.
	RecordRoute bool
	// MaxForwards is the Max-Forwards value set on requests that carry none.
	MaxForwards int
	// FRTimer is how long a forwarded request waits for a first reply
	// (Kamailio fr_timer); on expiry the attempt counts as 408.
	FRTimer time.Duration
	// FRInvTimer is how long an INVITE waits for a final reply once a
	// provisional reply has arrived (Kamailio fr_inv_timer).
	FRInvTimer time.Duration
	// WaitTimer is how long a finished UDP transaction stays to absorb
	// retransmissions (proxy.wt_timer, Kamailio tm's wt_timer); 0 = RFC
	// 3261's 64×T1 (32 s). The stateful proxy's UDP transactions (sip/txn)
	// take it from here; sipgo's, over TCP and TLS, from the process-wide
	// SetWaitTimer, which cmd calls. Validate only checks the range.
	WaitTimer time.Duration
	// UDPReaders is, in stateless mode, how many sockets share each UDP
	// listen address (SO_REUSEPORT, Linux), each read by its own goroutine
	// that parses and routes what it reads: the kernel spreads datagrams by
	// sender, so one peer's messages stay in order. 0 means one per CPU
	// (GOMAXPROCS); 1 a single socket. Stateful mode always reads one.
	UDPReaders int
	// TLSCert and TLSKey are PEM files; required when a tls listener is given.
	TLSCert, TLSKey string
	// RetryAfter is the Retry-After value, in seconds, of the 503 sent when a
	// set has no destination; 0 leaves the header out.
	RetryAfter int
	// PingInterval is the keepalive period (ds_ping_interval); 0 = no probing.
	PingInterval time.Duration
	// PingMethod is the keepalive method (ds_ping_method).
	PingMethod string
	// PingFrom is the keepalive From URI (ds_ping_from), unless a destination
	// has a ping_from attribute.
	PingFrom string
	// PingTimeout is how long a keepalive waits for its final reply
	// (ds_ping_fr_timer); 0 = FRTimer.
	PingTimeout time.Duration
	// PingProxy is the SIP URI keepalives are sent through (outbound_proxy)
	// unless a destination has an obproxy attribute; "" = none.
	PingProxy string
	// DefaultSocket (ds_default_socket, proto:host[:port]) or, winning over
	// it, DefaultSockname (ds_default_sockname, a listener's name) is the
	// listener requests and keepalives leave from when the destination
	// names none and it has the destination's transport; PingSocket
	// (ds_ping_socket) is that listener for keepalives only, ahead of both.
	// Each must be one of Listen; "" = the first listener of the transport.
	DefaultSocket, DefaultSockname, PingSocket string
	// UserAgent is the User-Agent of locally generated requests and the
	// Server header of local replies.
	UserAgent string
	// Observer receives counts for metrics; nil = none.
	Observer Observer
	// Resolver resolves destinations named by a host name; share it with
	// the registry (actors.Options.Resolver) so that from_set sees the
	// same answers. nil: one with DefaultDNSConfig, for sending only.
	Resolver *DestResolver
	// Tap receives a copy of every message the listeners read or write
	// (SIP capture); nil = none.
	Tap Tap
}

// DefaultConfig returns the defaults of docs/configuration.md.
func DefaultConfig() Config {
	return Config{
		Listen:      []string{"udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"},
		Mode:        ModeStateful,
		RecordRoute: true,
		MaxForwards: 70,
		FRTimer:     5 * time.Second,
		FRInvTimer:  120 * time.Second,
		RetryAfter:  30,
		PingMethod:  "OPTIONS",
		PingFrom:    "sip:dispatcher@localhost",
		UserAgent:   "sipdispatch",
	}
}

// ListenAddr is one parsed Listen entry.
type ListenAddr struct {
	Proto string // udp, tcp or tls
	Host  string // an IP address without brackets; "" = every address
	Port  int    // 0 picks a free port (tests)
	Name  string // Kamailio's socket name (`name sock1`), for sockname; "" = none
}

// Addr is the host:port to bind.
func (a ListenAddr) Addr() string { return net.JoinHostPort(a.Host, strconv.Itoa(a.Port)) }

// String is the entry in canonical form, proto:host:port.
func (a ListenAddr) String() string { return a.Proto + ":" + a.Addr() }

// Default ports of a listen entry without one (RFC 3261 §19.1.2).
const (
	DefaultPort    = 5060
	DefaultTLSPort = 5061
)

// ParseListen reads one listen entry, PROTO:HOST[:PORT] with PROTO udp, tcp
// or tls (any case) and HOST an IP address, IPv6 in brackets. A missing port
// is 5060, or 5061 for tls, as Kamailio's listen. A trailing ` name NAME`
// (quotes optional) names the socket, as Kamailio's `listen=... name "NAME"`,
// for the sockname attribute and ds_default_sockname. It is the one parser
// of SIP listen addresses: `sipdispatch check` and the server both use it.
func ParseListen(s string) (ListenAddr, error) {
	name := ""
	if f := strings.Fields(s); len(f) == 3 && strings.EqualFold(f[1], "name") {
		s, name = f[0], strings.Trim(f[2], `"`)
		if name == "" {
			return ListenAddr{}, errors.New("empty socket name")
		}
	} else if len(f) != 1 {
		return ListenAddr{}, errors.New(`want PROTO:HOST[:PORT] [name NAME]`)
	}
	la, err := parseListenAddr(s)
	la.Name = name
	return la, err
}

func parseListenAddr(s string) (ListenAddr, error) {
	proto, hp, ok := strings.Cut(s, ":")
	if !ok {
		return ListenAddr{}, errors.New("want PROTO:HOST[:PORT] with PROTO udp, tcp or tls")
	}
	a := ListenAddr{Proto: strings.ToLower(proto), Port: DefaultPort}
	switch a.Proto {
	case "udp", "tcp":
	case "tls":
		a.Port = DefaultTLSPort
	default:
		return ListenAddr{}, fmt.Errorf("unknown transport %q (udp, tcp, tls)", proto)
	}
	if hp == "" {
		return ListenAddr{}, errors.New("missing host")
	}
	host, port := hp, ""
	if h, p, err := net.SplitHostPort(hp); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hp, "[") && strings.HasSuffix(hp, "]") {
		host = hp[1 : len(hp)-1]
	} else if strings.Contains(hp, ":") {
		return ListenAddr{}, errors.New("bad address (IPv6 addresses go in brackets: udp:[::1]:5060)")
	}
	if host != "" {
		ip, err := netip.ParseAddr(host)
		if err != nil {
			return ListenAddr{}, fmt.Errorf("host %q must be an IP address", host)
		}
		host = ip.String()
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return ListenAddr{}, fmt.Errorf("bad port %q: want 0..65535", port)
		}
		a.Port = p
	}
	a.Host = host
	return a, nil
}

// MaxUDPReaders bounds UDPReaders.
const MaxUDPReaders = 64

// Validate reports every invalid field. Each error starts with the
// configuration key it is about, as in the YAML file ("listen[1]: ...",
// "proxy.mode: ..."), so that a caller can point at the file's line.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, v any, why string) {
		errs = append(errs, fmt.Errorf("%s: %v: %s", key, v, why))
	}
	q := strconv.Quote
	if len(c.Listen) == 0 {
		bad("listen", "[]", "at least one PROTO:HOST[:PORT] is required")
	}
	seen := map[string]bool{}
	for i, l := range c.Listen {
		key := fmt.Sprintf("listen[%d]", i)
		la, err := ParseListen(l)
		if err != nil {
			bad(key, q(l), err.Error())
			continue
		}
		if la.Port != 0 && seen[la.String()] {
			bad(key, q(l), "listed twice")
		}
		seen[la.String()] = true
		if la.Proto == "tls" && (c.TLSCert == "" || c.TLSKey == "") {
			bad(key, q(l), "a tls listener needs proxy.tls_cert and proxy.tls_key")
		}
		if (la.Host == "" || net.ParseIP(la.Host).IsUnspecified()) && c.Advertise == "" {
			// Via and Record-Route need an address peers can reach.
			bad(key, q(l), "a wildcard address needs advertise")
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("proxy.tls_key", q(c.TLSKey), "tls_cert and tls_key go together")
	}
	if c.Advertise != "" {
		if _, _, err := splitAdvertise(c.Advertise); err != nil {
			bad("advertise", q(c.Advertise), err.Error())
		}
	}
	if c.Mode != ModeStateful && c.Mode != ModeStateless {
		bad("proxy.mode", q(c.Mode), "must be "+ModeStateful+" or "+ModeStateless)
	}
	if c.MaxForwards < 1 || c.MaxForwards > 255 {
		bad("proxy.max_forwards", c.MaxForwards, "must be 1..255")
	}
	if c.FRTimer <= 0 {
		bad("proxy.fr_timer", c.FRTimer, "must be > 0")
	}
	if c.FRInvTimer <= 0 {
		bad("proxy.fr_inv_timer", c.FRInvTimer, "must be > 0")
	}
	if c.WaitTimer != 0 && (c.WaitTimer < sipmsg.T4 || c.WaitTimer > MaxWaitTimer) {
		bad("proxy.wt_timer", c.WaitTimer, fmt.Sprintf("must be 0 (RFC 3261: %v) or %v..%v", MaxWaitTimer, sipmsg.T4, MaxWaitTimer))
	}
	if c.UDPReaders < 0 || c.UDPReaders > MaxUDPReaders {
		bad("proxy.udp_readers", c.UDPReaders, fmt.Sprintf("must be 0..%d", MaxUDPReaders))
	}
	if c.RetryAfter < 0 {
		bad("retry_after", c.RetryAfter, "must not be negative")
	}
	if c.PingInterval < 0 {
		bad("dispatcher.ds_ping_interval", c.PingInterval, "must not be negative")
	}
	if c.PingTimeout < 0 {
		bad("dispatcher.ds_ping_fr_timer", c.PingTimeout, "must not be negative")
	}
	if c.PingProxy != "" {
		var u sipmsg.Uri
		if err := sipmsg.ParseUri(c.PingProxy, &u); err != nil {
			bad("dispatcher.outbound_proxy", q(c.PingProxy), err.Error())
		}
	}
	names := map[string]bool{}
	for i, l := range c.Listen {
		if la, err := ParseListen(l); err == nil && la.Name != "" {
			if names[la.Name] {
				bad(fmt.Sprintf("listen[%d]", i), q(l), "socket name "+q(la.Name)+" used twice")
			}
			names[la.Name] = true
		}
	}
	if c.DefaultSockname != "" {
		if _, err := c.listenerNamed(c.DefaultSockname); err != nil {
			bad("dispatcher.ds_default_sockname", q(c.DefaultSockname), err.Error())
		}
	}
	for _, k := range []struct{ key, v string }{{"dispatcher.ds_default_socket", c.DefaultSocket}, {"dispatcher.ds_ping_socket", c.PingSocket}} {
		if k.v != "" {
			if _, err := c.listenerAt(k.v); err != nil {
				bad(k.key, q(k.v), err.Error())
			}
		}
	}
	if c.PingInterval > 0 {
		if c.PingMethod == "" || strings.ContainsAny(c.PingMethod, " \t\r\n") {
			bad("dispatcher.ds_ping_method", q(c.PingMethod), "want a method token")
		}
		var u sipmsg.Uri
		if err := sipmsg.ParseUri(c.PingFrom, &u); err != nil {
			bad("dispatcher.ds_ping_from", q(c.PingFrom), err.Error())
		}
	}
	return errors.Join(errs...)
}

// listenerAt is the index in Listen of the listener a Kamailio socket
// value (proto:host[:port]) names: same transport, address and port.
func (c *Config) listenerAt(spec string) (int, error) {
	want, err := parseListenAddr(spec)
	if err != nil {
		return -1, err
	}
	for i, l := range c.Listen {
		if la, err := ParseListen(l); err == nil && la.Proto == want.Proto && la.Host == want.Host && la.Port == want.Port {
			return i, nil
		}
	}
	return -1, errors.New("not one of the listen sockets")
}

// listenerNamed is the index in Listen of the listener named name.
func (c *Config) listenerNamed(name string) (int, error) {
	for i, l := range c.Listen {
		if la, err := ParseListen(l); err == nil && la.Name == name {
			return i, nil
		}
	}
	return -1, errors.New("no listen socket has this name (listen: [\"udp:IP:PORT name NAME\"])")
}

// CheckDestination reports a destination whose socket, sockname or
// ping_socket attribute names no listener of c, or one of another transport
// than the destination's: Kamailio refuses such a destination at load
// (ds_add_dst), and sipdispatch must not silently send from elsewhere.
func (c *Config) CheckDestination(d *dispatch.Destination) error {
	proto := d.EffectiveTransport()
	check := func(attr, v string, i int, err error) error {
		if err != nil {
			return fmt.Errorf("%s %q: %w", attr, v, err)
		}
		if la, _ := ParseListen(c.Listen[i]); la.Proto != proto {
			return fmt.Errorf("%s %q: a %s listener cannot send to this %s destination", attr, v, la.Proto, proto)
		}
		return nil
	}
	var errs []error
	if v := d.Attrs.Sockname; v != "" {
		i, err := c.listenerNamed(v)
		errs = append(errs, check("sockname", v, i, err))
	} else if v := d.Attrs.Socket; v != "" {
		i, err := c.listenerAt(v)
		errs = append(errs, check("socket", v, i, err))
	}
	if v := d.Attrs.PingSocket; v != "" {
		i, err := c.listenerAt(v)
		errs = append(errs, check("ping_socket", v, i, err))
	}
	return errors.Join(errs...)
}

// splitAdvertise parses host[:port]; port 0 means "the listen port".
func splitAdvertise(s string) (string, int, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			return "", 0, errors.New("bad port: want 1..65535")
		}
		return strings.Trim(host, "[]"), p, nil
	}
	h := strings.Trim(s, "[]")
	if h == "" || strings.ContainsAny(h, " /;") {
		return "", 0, errors.New("want host[:port]")
	}
	return h, 0, nil
}
