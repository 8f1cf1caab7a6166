package sip

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strconv"
	"strings"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/sipenc"
	"github.com/sipdispatch/sipdispatch/sip/txn"
)

// This file is the proxy's RFC 3261 §16 core, the same in both modes:
// validation, routing, Max-Forwards, loose routing, Record-Route, the
// request that goes out, and sending without a transaction. Where the
// stateful and the stateless proxy differ it asks the forwarder.

// hop is where a request goes next.
type hop struct {
	addr  string  // host:port
	proto string  // udp, tcp, tls
	sock  *socket // the listener to send from; nil = the first of proto
}

// hopOf is the next hop a URI of a Route or an in-dialog Request-URI names
// (RFC 3263 without DNS SRV: the transport parameter, else TLS for sips,
// else UDP; the scheme's port). Destinations of a set go through destHop.
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
// Config.Mode — statefulForwarder (sip/stateful.go) or statelessForwarder
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
	// done when the forwarder has already dealt with the ACK (written as
	// tx's writes are: batchOf).
	ackBranch(req *sipmsg.Request, tx sipmsg.ServerTransaction, mf int) (branch string, done bool)
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
		s.onAck(req, tx)
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
		if countHeaders(req, name) > 1 {
			return 400, "Duplicate " + name + " Header"
		}
	}
	switch req.Recipient.Scheme {
	case "sip", "sips", "tel":
		return 0, ""
	}
	return 416, "Unsupported URI Scheme"
}

// countHeaders counts m's headers named name (case-insensitive) without
// the slice sipgo's GetHeaders allocates; the fast path asks on every
// message.
func countHeaders(m interface{ Headers() []sipmsg.Header }, name string) int {
	n := 0
	for _, h := range m.Headers() {
		if strings.EqualFold(h.Name(), name) {
			n++
		}
	}
	return n
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

// routeHeaders appends req's Route headers to dst, as sipgo's
// GetHeaders("Route") lists them (names compared ASCII case-insensitively),
// without its slice and its lower-casing of every other header's name.
func routeHeaders(dst []sipmsg.Header, req *sipmsg.Request) []sipmsg.Header {
	for _, h := range req.Headers() {
		if dispatch.HeaderNameEqual(h.Name(), "Route") {
			dst = append(dst, h)
		}
	}
	return dst
}

// routeBuf is the stack room for a request's Route headers.
type routeBuf [4]sipmsg.Header

// hasForeignRoute reports whether a Route header names another element.
func (s *Server) hasForeignRoute(req *sipmsg.Request) bool {
	var rb routeBuf
	for _, h := range routeHeaders(rb[:0], req) {
		r, ok := h.(*sipmsg.RouteHeader)
		if !ok || !s.isSelf(r.Address.Host, r.Address.Port, r.Address.Scheme) {
			return true
		}
	}
	return false
}

// ownRoutes counts the leading values of routes (a request's Route
// headers) naming this node, which RFC 3261 §16.4 says to remove, and
// returns the set id our Record-Route carried in them (;ds=N), -1 when none.
func (s *Server) ownRoutes(routes []sipmsg.Header) (pop, loadSet int) {
	loadSet = -1
	for _, rh := range routes {
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
	var rb routeBuf
	routes := routeHeaders(rb[:0], req)
	pop, loadSet = s.ownRoutes(routes)
	if pop < len(routes) {
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
	fwd := forwardCopy(req)
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
	host, port := s.sentFrom(h.sock, h.proto)
	proto := upperProto(h.proto)
	via := &sipmsg.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       proto,
		Host:            host,
		Port:            port,
		Params:          sipmsg.HeaderParams{{K: "branch", V: branch}},
	}
	fwd.PrependHeader(via)
	fwd.SetDestination(h.addr)
	fwd.SetTransport(proto)
	fwd.Laddr = s.laddr(h.sock, h.proto)
	return fwd
}

// laddr is the local address a request over proto leaves from. Over UDP it
// is the listener itself, so that replies and in-dialog requests come back
// to it, not to an ephemeral socket. Over TCP and TLS a chosen listener
// (k) gives the connection's source address, with an ephemeral port as
// Kamailio's; without one the system picks.
func (s *Server) laddr(k *socket, proto string) sipmsg.Addr {
	if proto == "udp" {
		if k == nil {
			k = s.socketFor("udp")
		}
		if k != nil {
			return sipmsg.Addr{IP: k.ip, Port: k.port}
		}
		return sipmsg.Addr{}
	}
	if k != nil && !k.ip.IsUnspecified() {
		return sipmsg.Addr{IP: k.ip}
	}
	return sipmsg.Addr{}
}

// forwardCopy is the copy of req that outgoing turns into the forwarded
// request: a message of its own that shares req's header values and body,
// except the top Via, which outgoing edits (received, rport) and so is
// copied. Parsed header values are never changed in place afterwards — the
// proxy adds, removes and replaces whole headers of its own message, and
// sipgo only fills in the port of our new Via — so sharing them is safe;
// sipgo's deep Clone was a third of the stateless fast path's allocations
// and doubled what a stateful proxy's transactions hold
// (docs/benchmarks.md, "SIP path").
//
// NewRequest gives the copy a Request-URI of its own (it clones the
// parameter lists), and the top Via's copy has room for received and rport;
// no destination is set, outgoing sets it.
func forwardCopy(req *sipmsg.Request) *sipmsg.Request {
	fwd := sipmsg.NewRequest(req.Method, req.Recipient)
	fwd.SipVersion = req.SipVersion
	top := req.Via()
	for _, h := range req.Headers() {
		if h == sipmsg.Header(top) {
			via := *top
			via.Params = append(make(sipmsg.HeaderParams, 0, len(top.Params)+2), top.Params...)
			h = &via
		}
		fwd.AppendHeader(h)
	}
	fwd.SetBody(req.Body())
	fwd.SetTransport(req.Transport())
	fwd.SetSource(req.Source())
	fwd.Laddr = req.Laddr
	return fwd
}

// upperProto is strings.ToUpper for our transport names, without an
// allocation per request.
func upperProto(p string) string {
	switch p {
	case "udp":
		return "UDP"
	case "tcp":
		return "TCP"
	case "tls":
		return "TLS"
	}
	return strings.ToUpper(p)
}

// fromSetCheck is the ds_is_from_list callback for dr's source: set id -1
// checks every set, mode bit 1 leaves the port out of the comparison and bit 2
// the transport.
func fromSetCheck(d Dispatcher, dr *dispatch.Request) func(setID, mode int) bool {
	return func(setID, mode int) bool {
		port, proto := dr.SrcPort, dr.Proto
		if mode&1 != 0 {
			port = 0 // any port
		}
		if mode&2 != 0 {
			proto = "" // any transport
		}
		return d.FromSet(setID, dr.SrcIP, port, proto)
	}
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
	rt := s.routes.Match(&dr, fromSetCheck(s.d, &dr))
	if rt != nil {
		s.obs.Request(dr.Method, rt.Name)
	} else {
		s.obs.Request(dr.Method, "")
	}
	s.onRoute(req, tx, rt, &dr, mf, false)
}

// onRoute answers req as route rt says: 404 without a route, the reply of a
// reply route, else the dispatch. fellThrough is true for a route reached
// from one whose set had nothing active (on_empty: next): 100 Trying went
// out already.
func (s *Server) onRoute(req *sipmsg.Request, tx sipmsg.ServerTransaction, rt *Route, dr *dispatch.Request, mf int, fellThrough bool) {
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
	if !fellThrough {
		s.fw.trying(req, tx)
	}
	if s.fw.takeOver(req, tx, rt, dr, mf) {
		return
	}
	s.dispatchInitial(req, tx, rt, dr, mf)
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
		if d.OnEmptyNext && (errors.Is(err, errNoDests) || errors.Is(err, dispatch.ErrNoDestination) || errors.Is(err, dispatch.ErrUnknownSet)) {
			// Kamailio's `if (!ds_select_dst(1, 4)) ds_select_dst(2, 4)`:
			// the next route that matches takes the request.
			next := s.routes.Next(rt, dr, fromSetCheck(s.d, dr))
			if next == nil {
				s.unavailable(req, tx)
				return
			}
			s.log.Debug("sip: set empty, next route", "route", rt.Name, "next", next.Name)
			s.onRoute(req, tx, next, dr, mf, true)
			return
		}
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
// (the forwarder's ackBranch). An ACK is never answered: tx only says how
// it is written (batchOf).
func (s *Server) onAck(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	mf, ok := s.nextMaxForwards(req)
	if !ok {
		return
	}
	branch, done := s.fw.ackBranch(req, tx, mf)
	if done {
		return
	}
	h, pop, _, ok := s.nextHop(req)
	if !ok {
		s.log.Debug("sip: ACK with nowhere to go dropped", "call-id", req.CallID().Value())
		return
	}
	s.statelessSend(req, tx, s.outgoing(req, h, mf, pop, branch), nil)
}

// destHop is where a request for dest goes: its address, or for a host
// name the first RFC 3263 target (docs/proxy.md#destinations-named-by-host-name),
// and the listener it leaves from (docs/proxy.md#local-sockets).
// A name not resolved yet waits for DNS up to fr_timer.
func (s *Server) destHop(dest *dispatch.Destination) (hop, error) {
	if !isName(dest) {
		proto := dest.EffectiveTransport()
		return hop{addr: dest.HostPort(), proto: proto, sock: s.destSocket(dest, proto, false)}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
	defer cancel()
	t, err := s.res.Target(ctx, dest)
	if err != nil {
		// The resolver logs the failure once per retry, not per request.
		s.log.Debug("sip: destination not resolved", "uri", dest.URI, "err", err)
		return hop{}, err
	}
	return hop{addr: hostPort(t), proto: t.Transport, sock: s.destSocket(dest, t.Transport, false)}, nil
}

// dispatchOutgoing builds the request for one destination of a selection,
// sent to h (destHop): ds_select_domain's R-URI rewrite, the route's
// headers, Record-Route. tx is req's server transaction, which tells the
// listener req came in on.
func (s *Server) dispatchOutgoing(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel *actors.Selection, dest *dispatch.Destination, h hop, mf int, branch string) *sipmsg.Request {
	s.obs.Selected(sel.SetID, dest.URI)
	var rb routeBuf
	pop, _ := s.ownRoutes(routeHeaders(rb[:0], req)) // a preloaded Route to us
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
		in, inSock := strings.ToLower(req.Transport()), s.arrivedOn(tx)
		inHost, inPort := s.sentFrom(inSock, in)
		outHost, outPort := s.sentFrom(h.sock, h.proto)
		if in != h.proto || inHost != outHost || inPort != outPort {
			// Double Record-Route (RFC 5658) when the request leaves on
			// another transport or listener than it came in on (a socket
			// attribute), so that each side reaches us where it can.
			s.recordRoute(fwd, inSock, in, loadSet)
		}
		s.recordRoute(fwd, h.sock, h.proto, loadSet)
	}
	return fwd
}

// arrivedOn is the listener a request came in on, from its server
// transaction (stateless mode's per-listener wireTx, or sipgo's, whose
// connection's local address is the listener's), or nil when unknown.
func (s *Server) arrivedOn(tx sipmsg.ServerTransaction) *socket {
	switch t := tx.(type) {
	case *wireTx:
		return t.k
	case *txn.ServerTx:
		return s.udpListener(t.LocalAddr())
	case interface{ Connection() sipmsg.Connection }:
		c := t.Connection()
		if c == nil {
			return nil
		}
		var ip net.IP
		var port int
		udp := false
		switch a := c.LocalAddr().(type) {
		case *net.UDPAddr:
			ip, port, udp = a.IP, a.Port, true
		case *net.TCPAddr:
			ip, port = a.IP, a.Port
		default:
			return nil
		}
		for _, k := range s.socks {
			if (k.proto == "udp") == udp && k.port == port && (k.ip.Equal(ip) || k.ip.IsUnspecified()) {
				return k
			}
		}
	}
	return nil
}

// recordRoute prepends our Record-Route for proto (RFC 3261 §16.6 step 4);
// ;ds=N tells the BYE which set holds the call's load. k is the listener
// the request leaves from (nil = the first of proto).
func (s *Server) recordRoute(fwd *sipmsg.Request, k *socket, proto string, loadSet int) {
	host, port := s.sentFrom(k, proto)
	u := sipmsg.Uri{Scheme: "sip", Host: host, Port: port,
		UriParams: append(make(sipmsg.HeaderParams, 0, 3), sipmsg.HeaderKV{K: "transport", V: proto}, sipmsg.HeaderKV{K: "lr"})}
	if loadSet >= 0 {
		u.UriParams.Add("ds", strconv.Itoa(loadSet))
	}
	fwd.PrependHeader(&sipmsg.RecordRouteHeader{Address: u})
}

// statelessSend writes fwd without a transaction, as tx's writes go
// (batchOf). When the write fails — at once, or for a write in a read
// loop's batch when the batch goes out — the sender gets 503 (tx nil:
// nobody to tell; an ACK is never answered), then failed runs, if not nil.
func (s *Server) statelessSend(req *sipmsg.Request, tx sipmsg.ServerTransaction, fwd *sipmsg.Request, failed func()) {
	s.writeStateless(fwd, batchOf(tx), func(err error) {
		s.log.Debug("sip: forward failed", "method", req.Method, "to", fwd.Destination(), "err", err)
		if tx != nil {
			s.reply(req, tx, 503, "Service Unavailable")
		}
		if failed != nil {
			failed()
		}
	})
}

// forwardResponse relays a copy of res, at once: the read loop (onWire) and the
// transaction layer may still be looking at res.
func (s *Server) forwardResponse(res *sipmsg.Response) {
	s.relayUpstream(res.Clone(), nil)
}

// relayUpstream removes our Via from res and sends it to the next Via's
// address (RFC 3261 §18.2.2: received and rport when present), over UDP in
// out, the read loop's batch, when not nil.
func (s *Server) relayUpstream(res *sipmsg.Response, out *sendBatch) {
	res.RemoveHeader("Via")
	next := res.Via()
	if next == nil {
		s.dropped.Add(1)
		return
	}
	proto := strings.ToUpper(next.Transport)
	res.SetDestination(viaDestination(next, proto))
	res.SetTransport(proto)
	s.obs.Reply(res.StatusCode)
	s.writeStateless(res, out, nil)
}

// writeStateless sends msg (a forwarded request or a relayed response)
// without a transaction. Over UDP everything leaves through the one writer of
// our UDP listener (udpWriters), requests and responses alike: the
// fast path keeps that socket out of sipgo's connection pool until ServeUDP
// registers it, and before then sipgo's transport layer, not finding it,
// would bind a second socket to the listen address and fail with "address
// already in use" (a TCP caller's first request to a UDP gateway got a 503).
// A host name in the destination is resolved here, as the transport layer
// would. TCP and TLS go through sipgo's transport layer, at once.
//
// With out, the read loop's batch, a UDP write joins it and leaves when
// the loop has handled its read batch (sendBatch); else it is written at
// once. failed runs on a failure, now or at the flush; without it the
// failure is logged (writeFailed).
func (s *Server) writeStateless(msg sipmsg.Message, out *sendBatch, failed func(error)) {
	var err error
	if k := s.udpSocket(msg); k != nil && s.resolveUDP(msg) {
		err = writeUDP(k, msg, out, failed)
	} else {
		err = s.ua.TransportLayer().WriteMsg(msg)
	}
	switch {
	case err == nil:
	case failed != nil:
		failed(err)
	default:
		s.writeFailed(nil, err)
	}
}

// resolveUDP gives msg an IP address as its destination, resolving a host
// name; false when it cannot (sipgo's transport layer then reports why).
func (s *Server) resolveUDP(msg sipmsg.Message) bool {
	if _, err := netip.ParseAddrPort(msg.Destination()); err == nil {
		return true // an IP address already: nothing to resolve
	}
	a, err := net.ResolveUDPAddr("udp", msg.Destination())
	if err != nil {
		return false
	}
	msg.SetDestination(a.String())
	return true
}

// writeFailed logs a write without a transaction that failed and that no
// one else handles (a relayed response, a local reply from a read loop's
// batch): UDP may lose it as well, and the sender retransmits.
func (s *Server) writeFailed(to net.Addr, err error) {
	s.log.Debug("sip: write failed", "to", to, "err", err)
}

// writeUDP sends msg from listener k to its destination, an IP address
// (resolveUDP): with out, the read loop's batch, it joins the batch and a
// failure reaches failed at the flush; else it is written at once through
// the listener's writer. It is sipgo's UDPConnection.WriteMsg with sipenc's
// serialisation, which writes the same bytes without an allocation per port
// and parameter list. It returns what fails before the send.
func writeUDP(k *socket, msg sipmsg.Message, out *sendBatch, failed func(error)) error {
	ap, err := netip.ParseAddrPort(msg.Destination())
	if err != nil {
		return err
	}
	to := net.UDPAddrFromAddrPort(ap)
	return sipenc.WithBytes(msg, func(b []byte) error {
		if len(b) > sipmsg.UDPMTUSize-200 {
			return sipmsg.ErrUDPMTUCongestion
		}
		if out != nil {
			out.addFor(k.pc, b, to, failed)
			return nil
		}
		_, err := k.w.PacketConn.WriteTo(b, to)
		return err
	})
}

// udpSocket is the listener a message over UDP leaves from: a request's
// chosen one (Laddr, from destSocket), else the first; nil when msg is not
// for UDP or there is no UDP listener.
func (s *Server) udpSocket(msg sipmsg.Message) *socket {
	if !strings.EqualFold(msg.Transport(), "UDP") {
		return nil
	}
	k := s.socketFor("udp")
	if r, ok := msg.(*sipmsg.Request); ok && r.Laddr.IP != nil {
		for _, l := range s.socks {
			if l.proto == "udp" && l.port == r.Laddr.Port && l.ip.Equal(r.Laddr.IP) {
				k = l
				break
			}
		}
	}
	if k == nil || k.w == nil {
		return nil
	}
	return k
}

// viaDestination is where a response to the hop that wrote v goes
// (viaTarget).
func viaDestination(v *sipmsg.ViaHeader, proto string) string {
	received, _ := v.Params.Get("received")
	rport, _ := v.Params.Get("rport")
	host, port := viaTarget(v.Host, v.Port, received, rport, proto)
	return net.JoinHostPort(host, strconv.Itoa(port))
}
