package sip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/txn"
)

// statefulForwarder is the stateful proxy (proxy.mode: stateful): each
// request is forwarded in a client transaction, with failover and forking,
// and its responses come back through that transaction.
type statefulForwarder struct {
	*Server
}

// tagReply leaves a local reply as it is: its server transaction absorbs
// the ACK for it.
func (s *statefulForwarder) tagReply(*sipmsg.Request, *sipmsg.Response) {}

// takeOver never does: every initial request is selected where it arrived,
// on its own goroutine.
func (s *statefulForwarder) takeOver(*sipmsg.Request, sipmsg.ServerTransaction, *Route, *dispatch.Request, int) bool {
	return false
}

// ackBranch gives an ACK for a 2xx a new branch: it is a transaction of its
// own (RFC 3261 §13.2.2.4).
func (s *statefulForwarder) ackBranch(*sipmsg.Request, sipmsg.ServerTransaction, int) (string, bool) {
	return sipmsg.GenerateBranch(), false
}

// onCancel answers a CANCEL that matched no INVITE transaction 481 (RFC 3261
// §9.2).
func (s *statefulForwarder) onCancel(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	s.reply(req, tx, 481, "Call/Transaction Does Not Exist")
}

// outcome is how one forwarding attempt ended.
type outcome struct {
	code      int              // final code; 408 for no final reply in time, 503 for a transport error
	res       *sipmsg.Response // the final response, nil when the code is local
	relayed   bool             // a 2xx already went upstream
	cancelled bool             // the caller cancelled
}

// cancelWatch turns the upstream CANCEL into a channel. The transaction layer
// has already answered it 200 and sent 487 upstream (sipgo behaviour); the
// proxy only has to cancel downstream and stop failing over.
type cancelWatch struct {
	ch   chan struct{}
	once sync.Once
}

func (c *cancelWatch) fire() { c.once.Do(func() { close(c.ch) }) }

func (c *cancelWatch) fired() bool {
	select {
	case <-c.ch:
		return true
	default:
		return false
	}
}

func watchCancel(req *sipmsg.Request, tx sipmsg.ServerTransaction) *cancelWatch {
	c := &cancelWatch{ch: make(chan struct{})}
	if req.IsInvite() && !tx.OnCancel(func(*sipmsg.Request) { c.fire() }) {
		c.fire() // cancelled before we got here
	}
	return c
}

// forwardInitial forwards an initial request through its selection
// (docs/proxy.md, "How the proxy handles a request", step 8): on a timeout or a
// failover code it marks the destination when the route asks and tries the next
// one; the caller gets the last final reply.
func (s *statefulForwarder) forwardInitial(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel actors.Selection, mf int) {
	if sel.Parallel && len(sel.Dests) > 1 {
		s.statefulParallel(req, tx, dr, d, sel, mf)
		return
	}
	c := watchCancel(req, tx)
	var out outcome
	for i := range sel.Dests {
		if c.fired() {
			out = outcome{code: 487, cancelled: true}
			break
		}
		dest := &sel.Dests[i]
		if i > 0 && sel.LoadAdded {
			s.moveLoad(sel.SetID, dr.CallID, dest.URI)
		}
		if h, err := s.destHop(dest); err != nil {
			out = outcome{code: 503} // as a transport error
		} else {
			out = s.attempt(tx, s.dispatchOutgoing(req, tx, dr, d, &sel, dest, h, mf, sipmsg.GenerateBranch()), c)
		}
		if out.relayed || out.cancelled || !d.FailoverOn(out.code) {
			break
		}
		if d.Mark != nil {
			op, uri, setID := *d.Mark, dest.URI, sel.SetID
			s.async("mark", func(ctx context.Context) error { return s.d.Mark(ctx, setID, uri, op) })
		}
		s.log.Debug("sip: failover", "set", sel.SetID, "from", dest.URI, "code", out.code)
	}
	if !out.relayed && !out.cancelled {
		s.relayFinal(req, tx, out)
	}
	if sel.LoadAdded {
		code := out.code
		if out.cancelled {
			code = 487
		}
		s.finalLoad(sel.SetID, dr.CallID, code)
	}
}

// forwardInDialog forwards an in-dialog request along its Route set, in a
// client transaction of its own.
func (s *statefulForwarder) forwardInDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction, h hop, mf, pop int) {
	fwd := s.outgoing(req, h, mf, pop, sipmsg.GenerateBranch())
	c := watchCancel(req, tx)
	s.trying(req, tx)
	out := s.attempt(tx, fwd, c)
	if !out.relayed && !out.cancelled {
		s.relayFinal(req, tx, out)
	}
}

// trying answers an INVITE with 100 at once (RFC 3261 §16.2), so that the
// caller stops retransmitting while we route, select and forward.
func (s *statefulForwarder) trying(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if !req.IsInvite() {
		return
	}
	if _, ours := tx.(*txn.ServerTx); !ours {
		s.reply(req, tx, 100, "Trying")
		return
	}
	s.respond(tx, tryingFor(req))
}

// tryingFor is sipgo's NewResponseFromRequest(req, 100, "Trying", nil)
// sharing req's header values instead of cloning them: our transaction
// layer writes the 100 out at once and keeps only its bytes, and no one
// changes the request's headers. The top Via is copied when RFC 3581 has
// received and rport filled in.
func tryingFor(req *sipmsg.Request) *sipmsg.Response {
	res := sipmsg.NewResponse(100, "Trying")
	res.SipVersion = req.SipVersion
	top := req.Via()
	for _, h := range req.Headers() {
		v, ok := h.(*sipmsg.ViaHeader)
		if !ok {
			continue
		}
		if v == top {
			if rport, has := v.Params.Get("rport"); has && rport == "" {
				host, port, _ := net.SplitHostPort(req.Source())
				c := *v
				c.Params = append(make(sipmsg.HeaderParams, 0, len(v.Params)+1), v.Params...)
				c.Params.Add("rport", port)
				c.Params.Add("received", host)
				v = &c
			}
		}
		res.AppendHeader(v)
	}
	if h := req.From(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.To(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.CallID(); h != nil {
		res.AppendHeader(h)
	}
	if h := req.CSeq(); h != nil {
		res.AppendHeader(h)
	}
	for _, h := range req.Headers() {
		if dispatch.HeaderNameEqual(h.Name(), "Timestamp") {
			res.AppendHeader(h)
		}
	}
	res.SetBody(nil)
	res.SetTransport(req.Transport())
	res.SetDestination(req.Source())
	return res
}

// attempt sends fwd in a client transaction and relays its provisional
// replies and a 2xx upstream in the order they came off the wire. Over UDP
// the transaction is our own (sip/txn), which delivers in wire order. Over
// TCP and TLS it is sipgo's, which hands each message to the transaction in
// its own goroutine, so a 200 can reach the transaction before its 180
// (which the state machine then drops); for those, provisional replies are
// taken from the read loop (onWire), and when the final one arrives every
// provisional read before it is relayed first. Timers are Kamailio's:
// fr_timer until the first reply, fr_inv_timer after a provisional one for
// an INVITE.
func (s *statefulForwarder) attempt(tx sipmsg.ServerTransaction, fwd *sipmsg.Request, c *cancelWatch) outcome {
	invite := fwd.IsInvite()
	var (
		clTx  clientTx
		early chan *sipmsg.Response // sipgo's transactions only; nil, never ready, for ours
	)
	ours, err := s.udpClientTx(fwd)
	ordered := ours != nil
	switch {
	case ordered:
		clTx = ours
	case err == nil:
		early = make(chan *sipmsg.Response, earlyQueue)
		branch, _ := fwd.Via().Params.Get("branch")
		s.early.Store(branch, early)
		defer s.early.Delete(branch)
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
		clTx, err = s.cli.TransactionRequest(ctx, fwd)
		cancel()
	}
	if err != nil {
		s.log.Debug("sip: forward failed", "to", fwd.Destination(), "err", err)
		return outcome{code: 503, cancelled: c.fired()}
	}
	if invite {
		// 2xx retransmissions while the transaction is in Accepted state.
		clTx.OnRetransmission(func(r *sipmsg.Response) { s.forwardResponse(r) })
	}
	timer := time.NewTimer(s.cfg.FRTimer)
	defer timer.Stop()
	provisional, cancelSent := false, false
	cancelCh := c.ch
	if !invite {
		cancelCh = nil
	}
	sendCancel := func() {
		if !cancelSent {
			cancelSent = true
			s.cancelDownstream(fwd)
			timer.Reset(s.cfg.FRTimer)
		}
	}
	gotProvisional := func() {
		if !provisional {
			provisional = true
			if invite && !cancelSent {
				timer.Reset(s.cfg.FRInvTimer)
			}
		}
		if c.fired() {
			sendCancel() // RFC 3261 §9.1: only once a provisional reply came
		}
	}
	for {
		select {
		case res := <-early:
			gotProvisional()
			if !c.fired() {
				s.relay(tx, res)
			}
		case res := <-clTx.Responses():
			if res.IsProvisional() {
				gotProvisional()
				if ordered && res.StatusCode > 100 && !c.fired() {
					s.relay(tx, res) // else relayed from early, in wire order
				}
				continue
			}
			for len(early) > 0 {
				if r := <-early; !c.fired() {
					s.relay(tx, r)
				}
			}
			if !invite {
				// A finished non-INVITE client transaction waits Timer K
				// (T4, 5 s) only to absorb retransmitted finals; without it
				// they are unmatched and dropped all the same
				// (onUnmatchedResponse), and the request and response it
				// holds go now.
				clTx.Terminate()
			}
			if res.IsSuccess() {
				s.relay(tx, res)
				return outcome{code: res.StatusCode, res: res, relayed: true}
			}
			return outcome{code: res.StatusCode, res: res, cancelled: c.fired()}
		case <-clTx.Done():
			code := 503
			if errors.Is(clTx.Err(), sipmsg.ErrTransactionTimeout) {
				code = 408
			}
			return outcome{code: code, cancelled: c.fired()}
		case <-cancelCh:
			cancelCh = nil
			if provisional {
				sendCancel()
			}
		case <-timer.C:
			if invite && provisional && !cancelSent {
				// fr_inv_timer: cancel the ringing branch, answer 408; the
				// branch's 487 is absorbed by its transaction.
				s.cancelDownstream(fwd)
				abandon(clTx)
				return outcome{code: 408, cancelled: c.fired()}
			}
			clTx.Terminate()
			return outcome{code: 408, cancelled: c.fired()}
		}
	}
}

// clientTx is what attempt needs of a client transaction: the txn layer's
// (*txn.ClientTx) over UDP, sipgo's over TCP and TLS.
type clientTx interface {
	Responses() <-chan *sipmsg.Response
	Done() <-chan struct{}
	Err() error
	Terminate()
	OnRetransmission(f sipmsg.FnTxResponse) bool
}

// udpClientTx starts fwd's client transaction in our own layer when fwd
// goes over UDP from one of our listeners; nil, nil when it does not (TCP,
// TLS: sipgo's transaction layer).
func (s *statefulForwarder) udpClientTx(fwd *sipmsg.Request) (*txn.ClientTx, error) {
	k := s.udpSocket(fwd)
	if k == nil || s.txl == nil {
		return nil, nil
	}
	to, err := udpAddr(fwd.Destination())
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", fwd.Destination(), err)
	}
	return s.txl.Send(fwd, k.pc, to)
}

// udpAddr is dest (host:port) as a UDP address, a host name resolved.
func udpAddr(dest string) (*net.UDPAddr, error) {
	if ap, err := netip.ParseAddrPort(dest); err == nil {
		return net.UDPAddrFromAddrPort(ap), nil
	}
	return net.ResolveUDPAddr("udp", dest)
}

// statefulRead is stateful mode's UDP hook, run by the listener's read loop
// (udpConn.serve) on every datagram: our transaction layer (sip/txn) matches it in place.
// A retransmission, the ACK for a non-2xx and a CANCEL are absorbed there;
// a response goes to its client transaction without a goroutine; a new
// request starts a server transaction and is handled on a goroutine of its
// own (selection may wait for a raft commit, and the attempt waits for the
// gateway), an ACK for a 2xx on the read loop (it is forwarded without
// state). What sipgo must still see goes back to it, as in statelessRead:
// datagrams that do not parse, keepalives, the replies to our probes, and
// anything read off a socket that is not one of our listeners.
func (s *statefulForwarder) statefulRead(p sipmsg.TransportReadProps, data []byte, out *sendBatch) ([]byte, error) {
	k, msg := s.ownDatagram(p, data)
	if msg == nil {
		return data, nil
	}
	switch m := msg.(type) {
	case *sipmsg.Request:
		tx, pass := s.txl.Request(m, k.pc, p.RemoteAddr)
		switch {
		case !pass:
		case tx == nil:
			// An ACK of its own, forwarded without state in the loop's
			// batch (it is never answered: the wireTx only carries out).
			s.onRequest(m, k.loopTx(out))
		default:
			go func() {
				s.onRequest(m, tx)
				tx.Release()
			}()
		}
	case *sipmsg.Response:
		switch {
		case s.txl.Response(m):
		case countHeaders(m, "Via") < 2:
			return data, nil // our probe's reply
		default:
			s.onUnmatchedResponse(m)
		}
	}
	return nil, nil
}

// earlyQueue bounds the provisional replies waiting for one attempt.
const earlyQueue = 16

// onWire hands provisional replies (except 100, which is hop-by-hop) to the
// attempt waiting on their branch, so that they go upstream in wire order.
func (s *statefulForwarder) onWire(msg sipmsg.Message) {
	res, ok := msg.(*sipmsg.Response)
	if !ok {
		return
	}
	if res.StatusCode <= 100 || res.StatusCode >= 200 {
		return
	}
	via := res.Via()
	if via == nil {
		return
	}
	branch, _ := via.Params.Get("branch")
	if q, ok := s.early.Load(branch); ok {
		select {
		case q.(chan *sipmsg.Response) <- res:
		default: // a flood of provisional replies: drop, as UDP could
		}
	}
}

// onUnmatchedResponse forwards 2xx retransmissions to INVITE, which arrive
// after the client transaction ended and must still reach the caller; the
// rest are late copies of finished transactions.
func (s *statefulForwarder) onUnmatchedResponse(res *sipmsg.Response) {
	via, cseq := res.Via(), res.CSeq()
	if via == nil || cseq == nil || cseq.MethodName != sipmsg.INVITE || !res.IsSuccess() || !s.isSelf(via.Host, via.Port, "sip") {
		return
	}
	s.forwardResponse(res)
}

// abandon leaves a cancelled INVITE client transaction to absorb the rest
// (its 487 and our ACK for it) without anyone reading its responses.
func abandon(clTx clientTx) {
	switch t := clTx.(type) {
	case *txn.ClientTx:
		t.Abandon()
	case sipmsg.ClientTransaction:
		go drain(t)
	}
}

// drain consumes what an abandoned sipgo client transaction still delivers,
// so its state machine never blocks on the unbuffered Responses channel.
func drain(clTx sipmsg.ClientTransaction) {
	for {
		select {
		case <-clTx.Responses():
		case <-clTx.Done():
			return
		}
	}
}

// relay sends a downstream response upstream without our Via (RFC 3261
// §16.7 step 9). It works on a copy: the client transaction still reads the
// original.
func (s *statefulForwarder) relay(tx sipmsg.ServerTransaction, res *sipmsg.Response) {
	s.respond(tx, relayCopy(res))
}

// respond sends r, a relayed reply, upstream.
func (s *statefulForwarder) respond(tx sipmsg.ServerTransaction, r *sipmsg.Response) {
	s.obs.Reply(r.StatusCode)
	if err := tx.Respond(r); err != nil {
		s.log.Debug("sip: response not relayed", "code", r.StatusCode, "err", err)
	}
}

// relayCopy is res as it goes upstream: without our Via on top, and with no
// destination, which the server transaction computes from the Via now on
// top. It shares the other header values and the body with res, which the
// client transaction keeps but never changes; the server transaction keeps
// the copy while it is pending (over UDP only its bytes after the final;
// sipgo's, over TCP and TLS, keeps it for Timers J and L, 32 s), so a deep
// copy doubled what a finished call held (docs/benchmarks.md, "SIP path").
func relayCopy(res *sipmsg.Response) *sipmsg.Response {
	r := sipmsg.NewResponse(res.StatusCode, res.Reason)
	r.SipVersion = res.SipVersion
	top := sipmsg.Header(res.Via())
	for _, h := range res.Headers() {
		if h != top {
			r.AppendHeader(h)
		}
	}
	r.SetBody(res.Body())
	r.SetTransport(res.Transport())
	r.SetSource(res.Source())
	return r
}

// relayFinal answers the caller with the last attempt's final reply, or a
// local one when the attempt produced none. A gateway's 503 goes upstream as
// 500 with the gateway's reason and headers: RFC 3261 §16.7 step 6 (a 503
// would tell the caller that this proxy, not one gateway, is unavailable),
// and what Kamailio's tm sends.
func (s *statefulForwarder) relayFinal(req *sipmsg.Request, tx sipmsg.ServerTransaction, out outcome) {
	if out.res != nil {
		r := relayCopy(out.res)
		if r.StatusCode == 503 {
			r.StatusCode = 500
		}
		s.respond(tx, r)
		return
	}
	s.reply(req, tx, out.code, reasonPhrase(out.code))
}

// cancelDownstream sends a CANCEL for the INVITE inv we forwarded (RFC 3261
// §9.1): same Request-URI, our Via with the same branch, Route, From, To,
// Call-ID and CSeq number, to the same place. sipgo builds none itself.
func (s *statefulForwarder) cancelDownstream(inv *sipmsg.Request) {
	c := sipmsg.NewRequest(sipmsg.CANCEL, *inv.Recipient.Clone())
	c.AppendHeader(sipmsg.HeaderClone(inv.Via()))
	for _, r := range inv.GetHeaders("Route") {
		c.AppendHeader(sipmsg.HeaderClone(r))
	}
	c.AppendHeader(sipmsg.HeaderClone(inv.From()))
	c.AppendHeader(sipmsg.HeaderClone(inv.To()))
	c.AppendHeader(sipmsg.HeaderClone(inv.CallID()))
	c.AppendHeader(&sipmsg.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sipmsg.CANCEL})
	mf := sipmsg.MaxForwardsHeader(s.cfg.MaxForwards)
	c.AppendHeader(&mf)
	c.SetBody(nil)
	c.SetDestination(inv.Destination())
	c.SetTransport(inv.Transport())
	c.Laddr = inv.Laddr
	if tx, err := s.udpClientTx(c); tx != nil || err != nil {
		if err != nil {
			s.log.Debug("sip: CANCEL downstream failed", "to", c.Destination(), "err", err)
			return
		}
		tx.Abandon() // its 200 needs no reading: the transaction absorbs it
		return
	}
	s.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
		defer cancel()
		if _, err := s.cli.Do(ctx, c); err != nil {
			s.log.Debug("sip: CANCEL downstream failed", "to", c.Destination(), "err", err)
		}
	})
}

// statefulParallel forks an initial request to every destination of an
// algorithm-12 selection at once, as Kamailio's ds_select_dst(…, 12) followed
// by t_relay does (RFC 3261 §16.7): every branch's provisional replies go
// upstream; the first 2xx is relayed and the other branches are cancelled; a
// 2xx from another branch that raced it is relayed too (the caller ACKs and
// ends it, step 5); a 6xx also cancels the others. When no branch answers
// 2xx the caller gets the best final reply (step 6, bestFinal). Branches that
// failed on their own, not because another one won, are marked when the
// route asks, as serial failover does.
func (s *statefulForwarder) statefulParallel(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel actors.Selection, mf int) {
	stop := watchCancel(req, tx) // fired by the caller's CANCEL, a 2xx or a 6xx
	var won, global atomic.Bool
	up := &serialTx{ServerTransaction: tx}
	outs := make([]outcome, len(sel.Dests))
	var wg sync.WaitGroup
	for i := range sel.Dests {
		h, err := s.destHop(&sel.Dests[i])
		if err != nil {
			outs[i] = outcome{code: 503} // as a transport error
			continue
		}
		fwd := s.dispatchOutgoing(req, tx, dr, d, &sel, &sel.Dests[i], h, mf, sipmsg.GenerateBranch())
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := s.attempt(up, fwd, stop)
			switch {
			case out.relayed:
				won.Store(true)
				stop.fire()
			case out.code >= 600:
				global.Store(true)
				stop.fire()
			}
			outs[i] = out
		}()
	}
	wg.Wait()
	if won.Load() {
		return
	}
	for i, out := range outs {
		// A gateway's own failure reply counts even if another branch's 6xx
		// came first; a 487 or a local timeout after our CANCEL does not.
		own := out.res != nil && out.code != 487 || out.res == nil && !out.cancelled
		if d.Mark == nil || !own || out.code >= 600 || !d.FailoverOn(out.code) {
			continue
		}
		op, uri, setID := *d.Mark, sel.Dests[i].URI, sel.SetID
		s.async("mark", func(ctx context.Context) error { return s.d.Mark(ctx, setID, uri, op) })
	}
	if stop.fired() && !global.Load() {
		return // the caller cancelled: the transaction layer answered 487
	}
	s.relayFinal(req, tx, bestFinal(outs))
}

// bestFinal picks the reply a forking proxy sends upstream when no branch
// answered 2xx (RFC 3261 §16.7 step 6): a 6xx if any, else the lowest class,
// the first branch's reply among equals (destination order).
func bestFinal(outs []outcome) outcome {
	best := -1
	for i, o := range outs {
		switch {
		case best < 0:
			best = i
		case o.code >= 600 && outs[best].code < 600:
			best = i
		case outs[best].code >= 600:
		case o.code/100 < outs[best].code/100:
			best = i
		}
	}
	if best < 0 {
		return outcome{code: 503}
	}
	return outs[best]
}

// serialTx lets the branches of a fork share one server transaction: their
// relays reach it one at a time, in the order they were taken off the wire.
type serialTx struct {
	sipmsg.ServerTransaction
	mu sync.Mutex
}

// Respond implements sipmsg.ServerTransaction.
func (t *serialTx) Respond(res *sipmsg.Response) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.ServerTransaction.Respond(res)
}
