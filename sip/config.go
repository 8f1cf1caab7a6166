package sip

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// Proxy modes (SPEC §6 step 5).
const (
	ModeStateful  = "stateful"
	ModeStateless = "stateless"
)

// Config is the proxy part of the node configuration (SPEC §3 listen,
// advertise, proxy and the ds_ping_* parameters).
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
	// UserAgent is the User-Agent of locally generated requests and the
	// Server header of local replies.
	UserAgent string
	// Observer receives counts for metrics; nil = none.
	Observer Observer
}

// DefaultConfig returns SPEC §3's defaults.
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

// listenAddr is one parsed Listen entry.
type listenAddr struct {
	proto string // udp, tcp, tls
	addr  string // host:port
}

// parseListen splits "proto:host:port".
func parseListen(s string) (listenAddr, error) {
	proto, hostport, ok := strings.Cut(s, ":")
	if !ok {
		return listenAddr{}, fmt.Errorf("listen %q: want proto:host:port", s)
	}
	proto = strings.ToLower(proto)
	switch proto {
	case "udp", "tcp", "tls":
	default:
		return listenAddr{}, fmt.Errorf("listen %q: unknown transport %q (udp, tcp, tls)", s, proto)
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return listenAddr{}, fmt.Errorf("listen %q: %w", s, err)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return listenAddr{}, fmt.Errorf("listen %q: bad port %q", s, port)
	}
	if host != "" && net.ParseIP(host) == nil {
		return listenAddr{}, fmt.Errorf("listen %q: host must be an IP address", s)
	}
	return listenAddr{proto: proto, addr: hostport}, nil
}

// Validate reports every invalid field.
func (c *Config) Validate() error {
	var errs []error
	if len(c.Listen) == 0 {
		errs = append(errs, errors.New("listen: at least one address needed"))
	}
	tls := false
	for _, l := range c.Listen {
		la, err := parseListen(l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		tls = tls || la.proto == "tls"
		if host, _, _ := net.SplitHostPort(la.addr); (host == "" || net.ParseIP(host).IsUnspecified()) && c.Advertise == "" {
			// Via and Record-Route need an address peers can reach.
			errs = append(errs, fmt.Errorf("listen %q: a wildcard address needs advertise", l))
		}
	}
	if tls && (c.TLSCert == "" || c.TLSKey == "") {
		errs = append(errs, errors.New("listen: a tls listener needs a certificate and key"))
	}
	if c.Advertise != "" {
		if _, _, err := splitAdvertise(c.Advertise); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Mode != ModeStateful && c.Mode != ModeStateless {
		errs = append(errs, fmt.Errorf("proxy.mode %q: want %s or %s", c.Mode, ModeStateful, ModeStateless))
	}
	if c.MaxForwards < 1 || c.MaxForwards > 255 {
		errs = append(errs, fmt.Errorf("proxy.max_forwards %d: want 1..255", c.MaxForwards))
	}
	if c.FRTimer <= 0 {
		errs = append(errs, fmt.Errorf("proxy.fr_timer %s: must be positive", c.FRTimer))
	}
	if c.FRInvTimer <= 0 {
		errs = append(errs, fmt.Errorf("proxy.fr_inv_timer %s: must be positive", c.FRInvTimer))
	}
	if c.RetryAfter < 0 {
		errs = append(errs, fmt.Errorf("retry_after %d: must not be negative", c.RetryAfter))
	}
	if c.PingInterval < 0 {
		errs = append(errs, fmt.Errorf("ds_ping_interval %s: must not be negative", c.PingInterval))
	}
	if c.PingInterval > 0 {
		if c.PingMethod == "" || strings.ContainsAny(c.PingMethod, " \t\r\n") {
			errs = append(errs, fmt.Errorf("ds_ping_method %q: want a method token", c.PingMethod))
		}
		var u sipmsg.Uri
		if err := sipmsg.ParseUri(c.PingFrom, &u); err != nil {
			errs = append(errs, fmt.Errorf("ds_ping_from %q: %w", c.PingFrom, err))
		}
	}
	return errors.Join(errs...)
}

// splitAdvertise parses host[:port]; port 0 means "the listen port".
func splitAdvertise(s string) (string, int, error) {
	if host, port, err := net.SplitHostPort(s); err == nil {
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			return "", 0, fmt.Errorf("advertise %q: bad port", s)
		}
		return strings.Trim(host, "[]"), p, nil
	}
	h := strings.Trim(s, "[]")
	if h == "" || strings.ContainsAny(h, " /;") {
		return "", 0, fmt.Errorf("advertise %q: want host[:port]", s)
	}
	return h, 0, nil
}
