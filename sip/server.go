package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/txn"
)

// Server is one node's SIP proxy: its listeners, the sipgo user agent they
// feed, and the forwarding logic of the configured mode.
type Server struct {
	cfg    Config
	d      Dispatcher
	routes Routes
	obs    Observer
	res    *DestResolver
	log    *slog.Logger

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	cli    *sipgo.Client
	parser *sipmsg.Parser // the UDP read filters (statelessRead, statefulRead)
	txl    *txn.Layer     // stateful mode: the transactions of the UDP listeners

	socks []*socket
	// byAddr and byName find a listener by the Kamailio socket value
	// ("udp:IP:PORT", as Config.Listen wrote it) or socket name; defSock and
	// pingSock are ds_default_socket/sockname and ds_ping_socket (nil = none).
	byAddr, byName    map[string]*socket
	defSock, pingSock *socket
	// advHost/advPort come from Config.Advertise; advPort 0 = listen port.
	advHost string
	advPort int

	fw       forwarder // the mode's forwarding, chosen once in NewServer
	loads    *loadTracker
	branches *expiringMap[sentInvite] // stateless mode: INVITEs forwarded, by our branch
	early    sync.Map                 // branch -> chan *sipmsg.Response: provisional replies in wire order

	dropped atomic.Int64 // messages dropped: unparsable, or not answerable

	bg       background // asynchronous Dispatcher calls, CANCELs and probes
	handoff  limited    // stateless alg-10 INVITEs, off the read loop
	stopOnce sync.Once
	stop     chan struct{}
}

// socket is one bound listener.
type socket struct {
	proto string // udp, tcp, tls
	pc    *udpConn
	// more are further sockets on pc's address (stateless mode, UDP,
	// Config.UDPReaders > 1), each read by its own loop.
	more []*udpConn
	w    *sipmsg.UDPConnection // UDP: the listener's writer (udpWriters)
	tx   *wireTx               // UDP: stateless replies, written at once through w
	ln   net.Listener
	ip   net.IP
	host string // ip.String(), which sentFrom writes into every Via and Record-Route
	port int
}

func (k *socket) addr() string {
	return k.proto + ":" + net.JoinHostPort(k.ip.String(), strconv.Itoa(k.port))
}

// init raises sipgo's UDP size limit, a process global: by default a UDP
// write over 1300 bytes fails, which would refuse INVITEs with a large SDP.
// The new limit lets through anything sipgo can parse (65535 bytes). It is set
// at init because any later write races with running sipgo goroutines.
func init() {
	sipmsg.UDPMTUSize = sipmsg.ParseMaxMessageLength + 200
}

// NewServer validates cfg and binds every listener, so that Addrs is valid
// when it returns; Serve starts reading.
func NewServer(cfg Config, d Dispatcher, routes Routes, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sip config: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg:      cfg,
		d:        d,
		routes:   routes,
		log:      log,
		loads:    newLoadTracker(64*sipmsg.T1 + cfg.FRInvTimer),
		handoff:  limited{slots: make(chan struct{}, maxHandoff)},
		branches: newExpiringMap[sentInvite](branchCacheSize, 64*sipmsg.T1+cfg.FRInvTimer),
		stop:     make(chan struct{}),
		obs:      cfg.Observer,
	}
	if s.obs == nil {
		s.obs = nopObserver{}
	}
	if s.res = cfg.Resolver; s.res == nil {
		var err error
		if s.res, err = NewDestResolver(DefaultDNSConfig(), log); err != nil {
			return nil, fmt.Errorf("sip dns: %w", err)
		}
	}
	if cfg.Advertise != "" {
		s.advHost, s.advPort, _ = splitAdvertise(cfg.Advertise)
	}
	var tlsConf *tls.Config
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("sip tls: %w", err)
		}
		tlsConf = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if err := s.bind(tlsConf); err != nil {
		s.closeSockets()
		return nil, err
	}
	s.indexSockets()
	s.raiseReadBuffers()

	sipLog := slog.New(&dropCounter{next: log.Handler(), n: &s.dropped})
	tpOpts := []sipmsg.TransportLayerOption{sipmsg.WithTransportLayerLogger(sipLog)}
	// The one place the proxy mode is chosen (besides udpReaders, which
	// sizes the UDP listeners bound above).
	s.udpWriters()
	if cfg.Mode == ModeStateless {
		fw := &statelessForwarder{Server: s}
		s.fw = fw
		s.hookUDP(fw.statelessRead)
	} else {
		fw := &statefulForwarder{Server: s}
		s.fw = fw
		wait := cfg.WaitTimer
		if wait == 0 {
			wait = 64 * sipmsg.T1
		}
		s.txl = txn.New(txn.Timers{T1: sipmsg.T1, T2: sipmsg.T2, T4: sipmsg.T4, Wait: wait})
		s.hookUDP(fw.statefulRead)
	}
	if cfg.Tap != nil {
		s.tapSockets(cfg.Tap)
	}
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent(cfg.UserAgent),
		sipgo.WithUserAgentTransportLayerOptions(tpOpts...),
		sipgo.WithUserAgentTransactionLayerOptions(
			sipmsg.WithTransactionLayerLogger(sipLog),
			sipmsg.WithTransactionLayerUnhandledResponseHandler(s.fw.onUnmatchedResponse),
		),
	)
	if err != nil {
		s.closeSockets()
		return nil, fmt.Errorf("sip user agent: %w", err)
	}
	s.ua = ua
	ua.TransportLayer().OnMessage(s.fw.onWire)
	if s.srv, err = sipgo.NewServer(ua, sipgo.WithServerLogger(sipLog)); err != nil {
		s.close()
		return nil, fmt.Errorf("sip server: %w", err)
	}
	if s.cli, err = sipgo.NewClient(ua, sipgo.WithClientLogger(sipLog)); err != nil {
		s.close()
		return nil, fmt.Errorf("sip client: %w", err)
	}
	s.srv.OnNoRoute(s.onRequest)
	return s, nil
}

// bind opens every Config.Listen socket.
func (s *Server) bind(tlsConf *tls.Config) error {
	for _, l := range s.cfg.Listen {
		la, err := ParseListen(l)
		if err != nil {
			return fmt.Errorf("listen %q: %w", l, err)
		}
		k := &socket{proto: la.Proto}
		var local net.Addr
		switch la.Proto {
		case "udp":
			k.pc, k.more, err = bindUDP(la.Addr(), s.udpReaders())
			if err == nil {
				local = k.pc.LocalAddr()
			}
		case "tcp":
			k.ln, err = net.Listen("tcp", la.Addr())
		case "tls":
			k.ln, err = tls.Listen("tcp", la.Addr(), tlsConf)
		}
		if err != nil {
			return fmt.Errorf("listen %s: %w", l, err)
		}
		if k.ln != nil {
			local = k.ln.Addr()
		}
		host, port, _ := net.SplitHostPort(local.String())
		k.ip = net.ParseIP(host)
		k.host = k.ip.String()
		k.port, _ = strconv.Atoi(port)
		s.socks = append(s.socks, k)
	}
	return nil
}

// bindUDP binds addr with n sockets (listenUDP), each read by a loop of
// its own (udpConn).
func bindUDP(addr string, n int) (*udpConn, []*udpConn, error) {
	pc, more, err := listenUDP(addr, n)
	if err != nil {
		return nil, nil, err
	}
	var all []*udpConn
	for _, p := range append([]net.PacketConn{pc}, more...) {
		c, err := newUDPConn(p)
		if err != nil {
			for _, c := range all {
				c.Close()
			}
			pc.Close()
			for _, p := range more {
				p.Close()
			}
			return nil, nil, err
		}
		all = append(all, c)
	}
	return all[0], all[1:], nil
}

// listenUDP binds addr with n sockets sharing it (n > 1: SO_REUSEPORT). A
// plain bind comes first, so that an address another process holds — even
// with SO_REUSEPORT, which would otherwise silently share it with us — is
// an error as without the option; it also fixes the port when addr asks
// for port 0.
func listenUDP(addr string, n int) (net.PacketConn, []net.PacketConn, error) {
	pc, err := net.ListenPacket("udp", addr)
	if err != nil || n <= 1 {
		return pc, nil, err
	}
	local := pc.LocalAddr().String()
	pc.Close()
	lc := net.ListenConfig{Control: reusePort}
	var all []net.PacketConn
	for range n {
		c, err := lc.ListenPacket(context.Background(), "udp", local)
		if err != nil {
			for _, c := range all {
				c.Close()
			}
			return nil, nil, err
		}
		all = append(all, c)
	}
	return all[0], all[1:], nil
}

// indexSockets fills byAddr, byName, defSock and pingSock from the
// listeners just bound (Validate checked that each named one exists).
func (s *Server) indexSockets() {
	s.byAddr, s.byName = map[string]*socket{}, map[string]*socket{}
	for i, l := range s.cfg.Listen {
		la, _ := ParseListen(l)
		s.byAddr[la.String()] = s.socks[i]
		if la.Name != "" {
			s.byName[la.Name] = s.socks[i]
		}
	}
	if s.cfg.DefaultSockname != "" {
		s.defSock = s.byName[s.cfg.DefaultSockname]
	} else if s.cfg.DefaultSocket != "" {
		s.defSock = s.socketAt(s.cfg.DefaultSocket)
	}
	if s.cfg.PingSocket != "" {
		s.pingSock = s.socketAt(s.cfg.PingSocket)
	}
}

// socketAt is the listener a Kamailio socket value names, or nil.
func (s *Server) socketAt(spec string) *socket {
	la, err := parseListenAddr(spec)
	if err != nil {
		return nil
	}
	return s.byAddr[la.String()]
}

// destSocket is the listener a request to dest over proto leaves from, as Kamailio
// chooses it: the sockname attribute, else socket, else ds_default_sockname
// or ds_default_socket; with probe (a keepalive) ping_socket comes first
// and ds_ping_socket before the defaults. A choice of another transport
// than proto (only a default or, for a keepalive through an outbound proxy,
// an attribute: CheckDestination refuses attributes of another transport
// than the destination's at load) stands for a listener of proto on the
// same address, as Kamailio's get_send_socket does on a protocol mismatch;
// nil means the first listener of proto.
func (s *Server) destSocket(dest *dispatch.Destination, proto string, probe bool) *socket {
	var cands [6]*socket
	n := 0
	if probe && dest.Attrs.PingSocket != "" {
		cands[n] = s.socketAt(dest.Attrs.PingSocket)
		n++
	}
	if dest.Attrs.Sockname != "" {
		cands[n] = s.byName[dest.Attrs.Sockname]
		n++
	} else if dest.Attrs.Socket != "" {
		cands[n] = s.socketAt(dest.Attrs.Socket)
		n++
	}
	if probe {
		cands[n] = s.pingSock
		n++
	}
	cands[n] = s.defSock
	n++
	for _, k := range cands[:n] {
		if k == nil {
			continue
		}
		if k.proto == proto {
			return k
		}
		for _, l := range s.socks {
			if l.proto == proto && l.ip.Equal(k.ip) {
				return l
			}
		}
	}
	return nil
}

// udpReaders is how many sockets, each with its own read loop, stateless
// mode opens per UDP listen address: Config.UDPReaders, 0 meaning one per
// CPU. Stateful mode reads one socket: its read loop only matches
// transactions (sip/txn) and hands new requests to goroutines; more readers
// would be safe but are not measured.
func (s *Server) udpReaders() int {
	if s.cfg.Mode != ModeStateless || !reusePortSupported {
		return 1
	}
	if s.cfg.UDPReaders > 0 {
		return s.cfg.UDPReaders
	}
	return runtime.GOMAXPROCS(0)
}

// udpReadBuffer is the receive buffer asked for on every UDP listener (the
// kernel caps it at net.core.rmem_max). One goroutine per socket reads it —
// in stateless mode it also does all the work — so a larger buffer absorbs
// the bursts that pile up while that goroutine routes or waits for a CPU;
// with the default (about 200 KiB) a stateful proxy on a busy machine lost
// datagrams at 400 calls/s, and each loss costs retransmissions.
const udpReadBuffer = 1 << 20

// raiseReadBuffers asks for udpReadBuffer on every UDP socket.
func (s *Server) raiseReadBuffers() {
	for _, c := range s.udpConns() {
		if err := c.SetReadBuffer(udpReadBuffer); err != nil {
			s.log.Debug("sip: receive buffer not raised", "listen", c.LocalAddr().String(), "err", err)
		}
	}
}

// udpConns is every UDP socket of every listener.
func (s *Server) udpConns() []*udpConn {
	var all []*udpConn
	for _, k := range s.socks {
		if k.pc != nil {
			all = append(all, k.pc)
			all = append(all, k.more...)
		}
	}
	return all
}

// hookUDP has every UDP socket's read loop give its datagrams to h first
// (udpConn.serve), in whichever mode; a write of the loop's batch that
// fails with no handler of its own is logged.
func (s *Server) hookUDP(h udpHook) {
	for _, c := range s.udpConns() {
		c.hook = h
		c.out.orphan = s.writeFailed
	}
}

// ownDatagram parses a datagram read off one of our UDP listeners for the
// mode's hook (statelessRead, statefulRead). A nil message means the hook
// hands the datagram back to sipgo: another socket, or data that does not
// parse (sipgo drops and counts it).
func (s *Server) ownDatagram(p sipmsg.TransportReadProps, data []byte) (*socket, sipmsg.Message) {
	k := s.udpListener(p.LocalAddr)
	if k == nil {
		return nil, nil
	}
	msg, err := s.parser.ParseSIP(data)
	if err != nil {
		return nil, nil
	}
	msg.SetTransport(p.Transport)
	msg.SetSource(sourceString(p.RemoteAddr))
	return k, msg
}

// sourceString is a.String(), for an IPv4 source in one allocation instead
// of net.UDPAddr.String's two (the address, then the join with the port).
func sourceString(a net.Addr) string {
	if u, ok := a.(*net.UDPAddr); ok && u.Zone == "" {
		if ip4 := u.IP.To4(); ip4 != nil {
			var buf [len("255.255.255.255:65535")]byte
			b := netip.AddrFrom4([4]byte(ip4)).AppendTo(buf[:0])
			b = append(b, ':')
			return string(strconv.AppendInt(b, int64(u.Port), 10))
		}
	}
	return a.String()
}

// udpWriters prepares the UDP listeners for the read filters
// (statelessRead, statefulRead): a parser, and a writer on each socket that
// needs no entry in sipgo's connection pool.
func (s *Server) udpWriters() {
	s.parser = sipmsg.NewParser()
	for _, k := range s.socks {
		if k.pc != nil {
			k.w = &sipmsg.UDPConnection{PacketConn: k.pc, PacketAddr: k.pc.LocalAddr().String(), Listener: true}
			k.tx = &wireTx{k: k}
		}
	}
}

// Addrs returns the bound listeners as "proto:ip:port", in Config.Listen order.
func (s *Server) Addrs() []string {
	out := make([]string, len(s.socks))
	for i, k := range s.socks {
		out[i] = k.addr()
	}
	return out
}

// Dropped returns how many messages were dropped without an answer
// (unparsable, or a request too broken to reply to).
func (s *Server) Dropped() int64 { return s.dropped.Load() }

// Serve reads from every listener and runs the keepalive prober until ctx
// ends or Shutdown is called; then it closes everything.
func (s *Server) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	n := 0
	for _, k := range s.socks {
		n += 1 + 2*len(k.more)
		if k.pc != nil {
			n++
		}
	}
	errc := make(chan error, n)
	serve := func(k *socket) {
		go func() {
			var err error
			switch k.proto {
			case "udp":
				// Each socket: sipgo's read loop and, with a hook, ours
				// before it (udpConn).
				for _, c := range k.more {
					if c.hook != nil {
						go func() { errc <- c.serve() }()
					}
					go func() { errc <- s.srv.ServeUDP(c) }()
				}
				if k.pc.hook != nil {
					go func() { errc <- k.pc.serve() }()
				}
				err = s.srv.ServeUDP(k.pc)
			case "tcp":
				err = s.srv.ServeTCP(k.ln)
			case "tls":
				err = s.srv.ServeTLS(k.ln)
			}
			errc <- err
		}()
	}
	// UDP first: a request that comes in over TCP or TLS and leaves over
	// UDP goes through sipgo's transport layer, which sends from the UDP
	// listener only once ServeUDP has put it in its connection pool; before
	// that it binds a socket of its own to the listen address, which fails
	// with "address already in use" and the caller got a 503.
	udp := 0
	for _, k := range s.socks {
		if k.proto == "udp" {
			serve(k)
			udp++
		}
	}
	if pool := s.ua.TransportLayer().Pool("udp"); udp > 0 && pool != nil {
		for deadline := time.Now().Add(5 * time.Second); pool.Size() < udp && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
	}
	for _, k := range s.socks {
		if k.proto != "udp" {
			serve(k)
		}
	}
	if s.cfg.PingInterval > 0 {
		s.bg.Go(func() { s.probeLoop(ctx) })
	}
	var err error
	select {
	case <-ctx.Done():
	case <-s.stop:
	case err = <-errc:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			err = fmt.Errorf("sip listener: %w", err)
		} else {
			err = nil
		}
	}
	cancel()
	s.close()
	return err
}

// Shutdown stops Serve and waits, until ctx ends, for background Dispatcher
// calls and probes to finish.
func (s *Server) Shutdown(ctx context.Context) error {
	s.close()
	done := make(chan struct{})
	go func() {
		s.handoff.bg.CloseAndWait()
		s.bg.CloseAndWait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("sip shutdown: %w", ctx.Err())
	}
}

func (s *Server) close() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.closeSockets()
		if s.ua != nil {
			s.ua.Close()
		}
		if s.txl != nil {
			s.txl.Close()
		}
	})
}

func (s *Server) closeSockets() {
	for _, c := range s.udpConns() {
		c.Close()
	}
	for _, k := range s.socks {
		if k.ln != nil {
			k.ln.Close()
		}
	}
}

// async runs a Dispatcher call off the SIP path with a deadline, logging
// its failure; Shutdown waits for it.
func (s *Server) async(what string, f func(ctx context.Context) error) {
	s.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
		defer cancel()
		if err := f(ctx); err != nil {
			s.log.Warn("dispatcher call failed", "call", what, "err", err)
		}
	})
}

// background runs goroutines that Shutdown waits for. Once CloseAndWait has
// begun it admits no more — a WaitGroup must not gain work while Wait may be
// running — so work that arrives during shutdown is dropped, not raced.
type background struct {
	mu     sync.Mutex
	closed bool // guarded by mu
	wg     sync.WaitGroup
}

// Go runs f in a goroutine unless shutdown has begun; false if it has.
func (b *background) Go(f func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		f()
	}()
	return true
}

// maxHandoff bounds the stateless alg-10 INVITEs being placed at once: 1 s
// of a thousand calls a second waiting for a commit.
const maxHandoff = 1024

// limited is a background group that runs at most cap(slots) goroutines at
// once and refuses more, so that a stalled cluster sheds calls instead of
// piling up goroutines.
type limited struct {
	bg    background
	slots chan struct{}
}

// Go runs f in a goroutine; false when the group is full or closed.
func (l *limited) Go(f func()) bool {
	select {
	case l.slots <- struct{}{}:
	default:
		return false
	}
	if !l.bg.Go(func() { defer func() { <-l.slots }(); f() }) {
		<-l.slots
		return false
	}
	return true
}

// CloseAndWait refuses new work and waits for the running goroutines.
func (b *background) CloseAndWait() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.wg.Wait()
}

// socketFor returns the listener to send proto from, or nil.
func (s *Server) socketFor(proto string) *socket {
	for _, k := range s.socks {
		if k.proto == proto {
			return k
		}
	}
	return nil
}

// sentBy is the host and port this node writes into Via and Record-Route for
// proto: the advertised address, else the listener's (port 0 lets sipgo
// fill in the connection's).
func (s *Server) sentBy(proto string) (string, int) { return s.sentFrom(nil, proto) }

// sentFrom is sentBy for a request leaving from listener k (nil = the
// first listener of proto).
func (s *Server) sentFrom(k *socket, proto string) (string, int) {
	host, port := "", 0
	if k == nil {
		k = s.socketFor(proto)
	}
	if k != nil {
		host, port = k.host, k.port
	} else if len(s.socks) > 0 {
		host = s.socks[0].host // no listener of proto: its address, port from the connection
	}
	if s.advHost != "" {
		host = s.advHost
		if s.advPort != 0 {
			port = s.advPort
		}
	}
	return host, port
}

// isSelf reports whether host:port names this node (RFC 3261 §16.4: the
// proxy must recognise its own URIs in Route and Request-URI). Port 0 means
// the default port 5060/5061.
func (s *Server) isSelf(host string, port int, scheme string) bool {
	host = strings.Trim(host, "[]")
	if port == 0 {
		port = 5060
		if scheme == "sips" {
			port = 5061
		}
	}
	adv := s.advHost != "" && strings.EqualFold(host, s.advHost)
	if adv && s.advPort != 0 {
		return port == s.advPort
	}
	ip := net.ParseIP(host)
	for _, k := range s.socks {
		if k.port == port && (adv || ip != nil && (k.ip.Equal(ip) || k.ip.IsUnspecified())) {
			return true
		}
	}
	return false
}

// dropCounter passes sipgo's log records on, except its "failed to parse"
// errors: those carry the whole packet, so they are counted and logged at debug
// level without it (docs/proxy.md, "How the proxy handles a request", step 1).
type dropCounter struct {
	next slog.Handler
	n    *atomic.Int64
}

func (h *dropCounter) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, l) || l >= slog.LevelError
}

func (h *dropCounter) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == "failed to parse" {
		h.n.Add(1)
		if !h.next.Enabled(ctx, slog.LevelDebug) {
			return nil
		}
		d := slog.NewRecord(r.Time, slog.LevelDebug, "sip: dropped unparsable message", r.PC)
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				d.AddAttrs(a)
			}
			return true
		})
		return h.next.Handle(ctx, d)
	}
	if !h.next.Enabled(ctx, r.Level) {
		return nil
	}
	return h.next.Handle(ctx, r)
}

func (h *dropCounter) WithAttrs(as []slog.Attr) slog.Handler {
	return &dropCounter{next: h.next.WithAttrs(as), n: h.n}
}

func (h *dropCounter) WithGroup(name string) slog.Handler {
	return &dropCounter{next: h.next.WithGroup(name), n: h.n}
}
