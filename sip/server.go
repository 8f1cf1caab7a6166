package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Server is one node's SIP proxy: its listeners, the sipgo user agent they
// feed, and the forwarding logic of the configured mode.
type Server struct {
	cfg    Config
	d      Dispatcher
	routes Routes
	obs    Observer
	log    *slog.Logger

	ua     *sipgo.UserAgent
	srv    *sipgo.Server
	cli    *sipgo.Client
	parser *sipmsg.Parser // stateless mode's fast path (statelessRead)

	socks []*socket
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
	pc    net.PacketConn
	// more are further sockets on pc's address (stateless mode, UDP,
	// Config.UDPReaders > 1), each read by its own goroutine.
	more []net.PacketConn
	tx   *wireTx // stateless mode, UDP: answers and relays from this listener
	ln   net.Listener
	ip   net.IP
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

	sipLog := slog.New(&dropCounter{next: log.Handler(), n: &s.dropped})
	tpOpts := []sipmsg.TransportLayerOption{sipmsg.WithTransportLayerLogger(sipLog)}
	// The one place the proxy mode is chosen (besides udpReaders, which
	// sizes the UDP listeners bound above).
	if cfg.Mode == ModeStateless {
		fw := &statelessForwarder{Server: s}
		s.fw = fw
		s.statelessListeners()
		tpOpts = append(tpOpts, sipmsg.WithTransportLayerReadFilter(fw.statelessRead))
	} else {
		s.fw = &statefulForwarder{Server: s}
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
			k.pc, k.more, err = listenUDP(la.Addr(), s.udpReaders())
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
		k.port, _ = strconv.Atoi(port)
		s.socks = append(s.socks, k)
	}
	return nil
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

// udpReaders is how many sockets, each with its own read loop, stateless
// mode opens per UDP listen address: Config.UDPReaders, 0 meaning one per
// CPU. Stateful mode reads one socket (sipgo hands each message to a
// goroutine anyway).
func (s *Server) udpReaders() int {
	if s.cfg.Mode != ModeStateless || !reusePortSupported {
		return 1
	}
	if s.cfg.UDPReaders > 0 {
		return s.cfg.UDPReaders
	}
	return runtime.GOMAXPROCS(0)
}

// statelessReadBuffer is the receive buffer asked for on a stateless UDP
// listener (the kernel caps it at net.core.rmem_max).
const statelessReadBuffer = 1 << 20

// statelessListeners prepares the UDP listeners for stateless mode's fast
// path (statelessRead): a parser, and a writer on each socket that needs no
// entry in sipgo's connection pool. As one goroutine per socket now does all
// the work, a larger receive buffer absorbs bursts while it routes.
func (s *Server) statelessListeners() {
	s.parser = sipmsg.NewParser()
	for _, k := range s.socks {
		if k.pc != nil {
			for _, pc := range append([]net.PacketConn{k.pc}, k.more...) {
				if uc, ok := pc.(*net.UDPConn); ok {
					if err := uc.SetReadBuffer(statelessReadBuffer); err != nil {
						s.log.Debug("sip: receive buffer not raised", "listen", k.addr(), "err", err)
					}
				}
			}
			out := &sipmsg.UDPConnection{PacketConn: k.pc, PacketAddr: k.pc.LocalAddr().String(), Listener: true}
			k.tx = &wireTx{out: out}
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
		n += 1 + len(k.more)
	}
	errc := make(chan error, n)
	serve := func(k *socket) {
		go func() {
			var err error
			switch k.proto {
			case "udp":
				for _, pc := range k.more {
					go func() { errc <- s.srv.ServeUDP(pc) }()
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
	})
}

func (s *Server) closeSockets() {
	for _, k := range s.socks {
		if k.pc != nil {
			k.pc.Close()
		}
		for _, pc := range k.more {
			pc.Close()
		}
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
func (s *Server) sentBy(proto string) (string, int) {
	host, port := "", 0
	if k := s.socketFor(proto); k != nil {
		host, port = k.ip.String(), k.port
	} else if len(s.socks) > 0 {
		host = s.socks[0].ip.String() // no listener of proto: its address, port from the connection
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

// hop is where a request goes next.
type hop struct {
	addr  string // host:port
	proto string // udp, tcp, tls
}

// hopOf is the next hop a URI names (RFC 3263 without DNS SRV: the
// transport parameter, else TLS for sips, else UDP; the scheme's port).
func hopOf(u *sipmsg.Uri) hop {
	proto := "udp"
	if u.Scheme == "sips" {
		proto = "tls"
	}
	if t, ok := u.UriParams.Get("transport"); ok && t != "" {
		proto = strings.ToLower(t)
	}
	port := u.Port
	if port == 0 {
		port = 5060
		if proto == "tls" {
			port = 5061
		}
	}
	return hop{addr: net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port)), proto: proto}
}

// forwarder is what the proxy mode decides (docs/proxy.md): how a request
// leaves and how its responses come back. NewServer picks one from
// Config.Mode — statefulForwarder (sip/proxy.go) or statelessForwarder
// (sip/stateless.go) — and the RFC 3261 §16 core asks it at each point where
// the two proxies differ.
type forwarder interface {
	// tagReply adjusts a reply the proxy sends itself (reply).
	tagReply(req *sipmsg.Request, res *sipmsg.Response)
	// trying answers an initial INVITE 100 before it is forwarded.
	trying(req *sipmsg.Request, tx sipmsg.ServerTransaction)
	// takeOver runs between routing and selection (initial); true when it
	// has taken the request over: a retransmission replayed the way its
	// original went, or an INVITE handed off to be selected elsewhere.
	takeOver(req *sipmsg.Request, tx sipmsg.ServerTransaction, rt *Route, dr *dispatch.Request, mf int) bool
	// forwardInitial forwards an initial request through its selection.
	forwardInitial(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel actors.Selection, mf int)
	// forwardInDialog forwards an in-dialog request to h with Max-Forwards
	// mf, pop of our Route values removed.
	forwardInDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction, h hop, mf, pop int)
	// ackBranch is the branch for an ACK that matched no transaction (onAck);
	// done when the forwarder has already dealt with the ACK.
	ackBranch(req *sipmsg.Request, mf int) (branch string, done bool)
	// onCancel handles a CANCEL that matched no INVITE transaction.
	onCancel(req *sipmsg.Request, tx sipmsg.ServerTransaction)
	// onWire runs in sipgo's read loop for every message, in arrival order,
	// after the transaction layer has queued it; it must not block for long
	// nor modify the message.
	onWire(msg sipmsg.Message)
	// onUnmatchedResponse gets the responses no client transaction claims.
	onUnmatchedResponse(res *sipmsg.Response)
}

// onRequest handles every request that matches no server transaction.
func (s *Server) onRequest(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	defer func() {
		// A bug here must cost one request, not the node.
		if r := recover(); r != nil {
			s.dropped.Add(1)
			s.log.Error("sip: request handler panic", "panic", r, "method", req.Method)
		}
	}()
	if code, reason := validate(req); code != 0 {
		s.reply(req, tx, code, reason)
		return
	}
	switch {
	case req.IsAck():
		s.onAck(req)
	case req.IsCancel():
		s.fw.onCancel(req, tx)
	case req.To().Params.Has("tag"):
		s.inDialog(req, tx)
	case req.Method == sipmsg.OPTIONS && req.Recipient.User == "" &&
		s.isSelf(req.Recipient.Host, req.Recipient.Port, req.Recipient.Scheme) && !s.hasForeignRoute(req):
		// Keepalives addressed to the proxy itself (docs/proxy.md, step 3).
		s.reply(req, tx, 200, "OK")
	default:
		s.initial(req, tx)
	}
}

// validate applies RFC 3261 §16.3's request validation (and RFC 4475's
// expectations): the SIP version, the mandatory headers, CSeq matching the
// method, and a URI scheme a proxy can route.
func validate(req *sipmsg.Request) (int, string) {
	switch {
	case req.SipVersion != "SIP/2.0":
		return 505, "Version Not Supported"
	case req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil || req.Via() == nil:
		return 400, "Missing Required Header"
	case !strings.EqualFold(string(req.CSeq().MethodName), string(req.Method)):
		// Case-blind: sipgo upper-cases the request line's method only.
		return 400, "CSeq Method Mismatch"
	}
	// Single-valued headers given twice make the request ambiguous (RFC 4475
	// §3.3.8 multi01, §3.3.9 mcl01): which Call-ID would the call load track?
	for _, name := range [...]string{"Call-ID", "From", "To", "CSeq", "Max-Forwards", "Content-Length"} {
		if len(req.GetHeaders(name)) > 1 {
			return 400, "Duplicate " + name + " Header"
		}
	}
	switch req.Recipient.Scheme {
	case "sip", "sips", "tel":
		return 0, ""
	}
	return 416, "Unsupported URI Scheme"
}

// reply answers req locally; an ACK is never answered (RFC 3261 §17.2.3).
func (s *Server) reply(req *sipmsg.Request, tx sipmsg.ServerTransaction, code int, reason string, hdrs ...sipmsg.Header) {
	if req.IsAck() {
		return
	}
	s.obs.Reply(code)
	res := sipmsg.NewResponseFromRequest(req, code, reason, nil)
	s.fw.tagReply(req, res)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		s.log.Debug("sip: local reply not sent", "code", code, "err", err)
	}
}

// nextMaxForwards is RFC 3261 §16.3 step 3 and §16.6 step 3: false when the
// request has no hops left (483), else the value to forward with; a request
// without the header gets Config.MaxForwards.
func (s *Server) nextMaxForwards(req *sipmsg.Request) (int, bool) {
	mf := req.MaxForwards()
	if mf == nil {
		return s.cfg.MaxForwards, true
	}
	if mf.Val() == 0 {
		return 0, false
	}
	return int(mf.Val()) - 1, true
}

// hasForeignRoute reports whether a Route header names another element.
func (s *Server) hasForeignRoute(req *sipmsg.Request) bool {
	for _, h := range req.GetHeaders("Route") {
		r, ok := h.(*sipmsg.RouteHeader)
		if !ok || !s.isSelf(r.Address.Host, r.Address.Port, r.Address.Scheme) {
			return true
		}
	}
	return false
}

// ownRoutes counts the leading Route values naming this node, which RFC 3261
// §16.4 says to remove, and returns the set id our Record-Route carried in
// them (;ds=N), -1 when none.
func (s *Server) ownRoutes(req *sipmsg.Request) (pop, loadSet int) {
	loadSet = -1
	for _, rh := range req.GetHeaders("Route") {
		r, isRoute := rh.(*sipmsg.RouteHeader)
		if !isRoute || !s.isSelf(r.Address.Host, r.Address.Port, r.Address.Scheme) {
			break
		}
		if v, has := r.Address.UriParams.Get("ds"); has {
			if n, err := strconv.Atoi(v); err == nil {
				loadSet = n
			}
		}
		pop++
	}
	return pop, loadSet
}

// nextHop is loose routing (RFC 3261 §16.4, §16.12): after our own Route
// values (pop of them) the request goes to the next Route value, else to the
// Request-URI. ok is false when nothing but ourselves is left to route to.
func (s *Server) nextHop(req *sipmsg.Request) (h hop, pop int, loadSet int, ok bool) {
	pop, loadSet = s.ownRoutes(req)
	if routes := req.GetHeaders("Route"); pop < len(routes) {
		r, isRoute := routes[pop].(*sipmsg.RouteHeader)
		if !isRoute {
			return hop{}, 0, loadSet, false
		}
		return hopOf(&r.Address), pop, loadSet, true
	}
	u := &req.Recipient
	if u.Host == "" || s.isSelf(u.Host, u.Port, u.Scheme) {
		return hop{}, pop, loadSet, false
	}
	return hopOf(u), pop, loadSet, true
}

// outgoing builds what is sent to h: a copy of req with Max-Forwards mf,
// pop leading Route values removed, received/rport on the sender's Via
// (RFC 3261 §18.2.1, RFC 3581) and our Via with branch on top (§16.6 step 8).
func (s *Server) outgoing(req *sipmsg.Request, h hop, mf, pop int, branch string) *sipmsg.Request {
	fwd := req.Clone()
	m := sipmsg.MaxForwardsHeader(mf)
	if fwd.MaxForwards() != nil {
		fwd.ReplaceHeader(&m)
	} else {
		fwd.AppendHeader(&m)
	}
	for range pop {
		fwd.RemoveHeader("Route")
	}
	if v := fwd.Via(); v != nil {
		if host, port, err := net.SplitHostPort(req.Source()); err == nil {
			if v.Host != host {
				v.Params.Add("received", host)
			}
			// Reliable transports answer on the same connection, which the
			// stateless response path finds only by source port.
			if rp, has := v.Params.Get("rport"); has && rp == "" || sipmsg.IsReliable(req.Transport()) {
				v.Params.Add("rport", port)
			}
		}
	}
	host, port := s.sentBy(h.proto)
	via := &sipmsg.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       strings.ToUpper(h.proto),
		Host:            host,
		Port:            port,
	}
	via.Params.Add("branch", branch)
	fwd.PrependHeader(via)
	fwd.SetDestination(h.addr)
	fwd.SetTransport(strings.ToUpper(h.proto))
	fwd.Laddr = sipmsg.Addr{}
	if h.proto == "udp" {
		// Send from the listener so that replies and in-dialog requests
		// come back to it, not to an ephemeral socket.
		if k := s.socketFor("udp"); k != nil {
			fwd.Laddr = sipmsg.Addr{IP: k.ip, Port: k.port}
		}
	}
	return fwd
}

// initial routes a request that starts a dialog or stands alone (docs/proxy.md,
// "How the proxy handles a request", step 6).
func (s *Server) initial(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	mf, ok := s.nextMaxForwards(req)
	if !ok {
		s.reply(req, tx, 483, "Too Many Hops")
		return
	}
	dr := RequestFrom(req, req.Source(), req.Transport())
	rt := s.routes.Match(&dr, func(setID, mode int) bool {
		port, proto := dr.SrcPort, dr.Proto
		if mode&1 != 0 {
			port = 0 // any port
		}
		if mode&2 != 0 {
			proto = "" // any transport
		}
		return s.d.FromSet(setID, dr.SrcIP, port, proto)
	})
	if rt != nil {
		s.obs.Request(dr.Method, rt.Name)
	} else {
		s.obs.Request(dr.Method, "")
	}
	switch {
	case rt == nil:
		s.reply(req, tx, 404, "Not Found")
		return
	case rt.Dispatch == nil:
		code, reason := 404, "Not Found"
		if rt.Reply != nil {
			code, reason = rt.Reply.Code, rt.Reply.Reason
		}
		if reason == "" {
			reason = reasonPhrase(code)
		}
		s.reply(req, tx, code, reason)
		return
	}
	s.fw.trying(req, tx)
	if s.fw.takeOver(req, tx, rt, &dr, mf) {
		return
	}
	s.dispatchInitial(req, tx, rt, &dr, mf)
}

// dispatchInitial selects the destinations of an initial request on its
// route and forwards it.
func (s *Server) dispatchInitial(req *sipmsg.Request, tx sipmsg.ServerTransaction, rt *Route, dr *dispatch.Request, mf int) {
	d := rt.Dispatch
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
	sel, err := s.d.Select(ctx, d.Set, d.Alg, dr, d.Limit)
	cancel()
	if err == nil && len(sel.Dests) == 0 {
		err = errNoDests
	}
	switch {
	case errors.Is(err, actors.ErrLoadInFlight):
		// A retransmission while its first copy is being placed: the
		// first copy's outcome answers it.
		return
	case errors.Is(err, actors.ErrLoadNotCommitted):
		// Counted and logged (rate-limited) by the dispatcher.
		s.log.Debug("sip: call-load entry not committed", "route", rt.Name, "set", d.Set, "err", err)
		s.unavailable(req, tx)
		return
	case err != nil:
		s.log.Debug("sip: no destination", "route", rt.Name, "set", d.Set, "err", err)
		s.unavailable(req, tx)
		return
	}
	s.fw.forwardInitial(req, tx, dr, d, sel, mf)
}

var errNoDests = errors.New("empty selection")

// unavailable answers 503, with Retry-After when configured.
func (s *Server) unavailable(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	var hdrs []sipmsg.Header
	if s.cfg.RetryAfter > 0 {
		hdrs = append(hdrs, sipmsg.NewHeader("Retry-After", strconv.Itoa(s.cfg.RetryAfter)))
	}
	s.reply(req, tx, 503, "Service Unavailable", hdrs...)
}

// inDialog forwards a request carrying a To tag along its Route set
// (docs/proxy.md, "How the proxy handles a request", step 5); a BYE ends the
// call's load entry.
func (s *Server) inDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	mf, ok := s.nextMaxForwards(req)
	if !ok {
		s.reply(req, tx, 483, "Too Many Hops")
		return
	}
	s.obs.Request(string(req.Method), "in-dialog")
	h, pop, loadSet, ok := s.nextHop(req)
	if !ok {
		s.reply(req, tx, 404, "Not Found")
		return
	}
	if req.Method == sipmsg.BYE {
		switch {
		case loadSet >= 0:
			s.removeLoad(loadSet, req.CallID().Value())
		case pop == 0:
			// No Route of ours (record_route off, a UA that lost the route
			// set, a proxy in front that rewrote it): end the call's entry
			// by its Call-ID in whichever set has it, as ds_load_unset does.
			s.removeLoad(-1, req.CallID().Value())
		}
	}
	s.fw.forwardInDialog(req, tx, h, mf, pop)
}

// onAck forwards an ACK that matched no transaction: the ACK for a 2xx, a
// new transaction along the Route set (RFC 3261 §13.2.2.4), or in stateless
// mode the hop-by-hop ACK for a non-2xx, which goes where its INVITE went
// (the forwarder's ackBranch).
func (s *Server) onAck(req *sipmsg.Request) {
	mf, ok := s.nextMaxForwards(req)
	if !ok {
		return
	}
	branch, done := s.fw.ackBranch(req, mf)
	if done {
		return
	}
	h, pop, _, ok := s.nextHop(req)
	if !ok {
		s.log.Debug("sip: ACK with nowhere to go dropped", "call-id", req.CallID().Value())
		return
	}
	s.statelessSend(req, nil, s.outgoing(req, h, mf, pop, branch))
}

// dispatchOutgoing builds the request for one destination of a selection:
// ds_select_domain's R-URI rewrite, the route's headers, Record-Route.
func (s *Server) dispatchOutgoing(req *sipmsg.Request, dr *dispatch.Request, d *Dispatch, sel *actors.Selection, dest *dispatch.Destination, mf int, branch string) *sipmsg.Request {
	s.obs.Selected(sel.SetID, dest.URI)
	h := hop{addr: dest.HostPort(), proto: dest.EffectiveTransport()}
	pop, _ := s.ownRoutes(req) // a preloaded Route to us
	fwd := s.outgoing(req, h, mf, pop, branch)
	if d.Domain {
		fwd.Recipient.Host = dest.Host
		fwd.Recipient.Port = dest.Port
	}
	if len(d.Headers) > 0 {
		vars := dispatch.DSVars{Set: sel.SetID, URI: dest.URI, DUID: dest.Attrs.DUID, Attrs: dest.Attrs.Raw, Count: len(sel.Dests)}
		var buf []byte
		for _, ht := range d.Headers {
			buf = ht.Value.Append(buf[:0], dr, &vars)
			fwd.AppendHeader(sipmsg.NewHeader(ht.Name, string(buf)))
		}
	}
	if s.cfg.RecordRoute {
		loadSet := -1
		if sel.LoadAdded {
			loadSet = sel.SetID
		}
		in := strings.ToLower(req.Transport())
		if in != h.proto {
			// Double Record-Route (RFC 5658) when the transports differ,
			// so that each side reaches us on its own transport.
			s.recordRoute(fwd, in, loadSet)
		}
		s.recordRoute(fwd, h.proto, loadSet)
	}
	return fwd
}

// recordRoute prepends our Record-Route for proto (RFC 3261 §16.6 step 4);
// ;ds=N tells the BYE which set holds the call's load.
func (s *Server) recordRoute(fwd *sipmsg.Request, proto string, loadSet int) {
	host, port := s.sentBy(proto)
	u := sipmsg.Uri{Scheme: "sip", Host: host, Port: port}
	u.UriParams.Add("transport", proto)
	u.UriParams.Add("lr", "")
	if loadSet >= 0 {
		u.UriParams.Add("ds", strconv.Itoa(loadSet))
	}
	fwd.PrependHeader(&sipmsg.RecordRouteHeader{Address: u})
}
