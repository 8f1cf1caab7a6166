package sip

import (
	"context"
	"errors"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

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

// statefulInitial forwards an initial request through its selection
// (docs/proxy.md, "How the proxy handles a request", step 8): on a timeout or a
// failover code it marks the destination when the route asks and tries the next
// one; the caller gets the last final reply.
func (s *Server) statefulInitial(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel actors.Selection, mf int) {
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
		out = s.attempt(tx, s.dispatchOutgoing(req, dr, d, &sel, dest, mf, sipmsg.GenerateBranch()), c)
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

// statefulInDialog forwards an in-dialog request along its Route set.
func (s *Server) statefulInDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction, fwd *sipmsg.Request) {
	c := watchCancel(req, tx)
	s.trying(req, tx)
	out := s.attempt(tx, fwd, c)
	if !out.relayed && !out.cancelled {
		s.relayFinal(req, tx, out)
	}
}

// trying answers an INVITE with 100 at once (RFC 3261 §16.2), so that the
// caller stops retransmitting while we route, select and forward.
func (s *Server) trying(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if req.IsInvite() {
		s.reply(req, tx, 100, "Trying")
	}
}

// attempt sends fwd in a client transaction and relays its provisional
// replies and a 2xx upstream in the order they came off the wire. sipgo
// hands each message to the transaction in its own goroutine, so a 200 can
// reach the transaction before its 180 (which the state machine then drops);
// provisional replies are therefore taken from the read loop (onWire), and
// when the final one arrives every provisional read before it is relayed
// first. Timers are Kamailio's: fr_timer until the first reply, fr_inv_timer
// after a provisional one for an INVITE.
func (s *Server) attempt(tx sipmsg.ServerTransaction, fwd *sipmsg.Request, c *cancelWatch) outcome {
	invite := fwd.IsInvite()
	branch, _ := fwd.Via().Params.Get("branch")
	early := make(chan *sipmsg.Response, earlyQueue)
	s.early.Store(branch, early)
	defer s.early.Delete(branch)

	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
	clTx, err := s.cli.TransactionRequest(ctx, fwd)
	cancel()
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
				gotProvisional() // relayed from early, in wire order
				continue
			}
			for len(early) > 0 {
				if r := <-early; !c.fired() {
					s.relay(tx, r)
				}
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
				go drain(clTx)
				return outcome{code: 408, cancelled: c.fired()}
			}
			clTx.Terminate()
			return outcome{code: 408, cancelled: c.fired()}
		}
	}
}

// earlyQueue bounds the provisional replies waiting for one attempt.
const earlyQueue = 16

// onWire runs in sipgo's read loop for every message, in arrival order, after
// the transaction layer has queued it; it must not block for long nor modify
// the message. Stateless mode forwards responses from here. Stateful mode
// hands provisional replies (except 100, which is hop-by-hop) to the attempt
// waiting on their branch.
func (s *Server) onWire(msg sipmsg.Message) {
	res, ok := msg.(*sipmsg.Response)
	if !ok {
		return
	}
	if s.cfg.Mode == ModeStateless {
		s.statelessResponse(res)
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

// drain consumes what an abandoned client transaction still delivers, so its
// state machine never blocks on the unbuffered Responses channel.
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
func (s *Server) relay(tx sipmsg.ServerTransaction, res *sipmsg.Response) {
	r := res.Clone()
	r.RemoveHeader("Via")
	r.SetDestination("") // computed again from the Via now on top
	s.obs.Reply(r.StatusCode)
	if err := tx.Respond(r); err != nil {
		s.log.Debug("sip: response not relayed", "code", r.StatusCode, "err", err)
	}
}

// relayFinal answers the caller with the last attempt's final reply, or a
// local one when the attempt produced none.
func (s *Server) relayFinal(req *sipmsg.Request, tx sipmsg.ServerTransaction, out outcome) {
	if out.res != nil {
		s.relay(tx, out.res)
		return
	}
	s.reply(req, tx, out.code, reasonPhrase(out.code))
}

// cancelDownstream sends a CANCEL for the INVITE inv we forwarded (RFC 3261
// §9.1): same Request-URI, our Via with the same branch, Route, From, To,
// Call-ID and CSeq number, to the same place. sipgo builds none itself.
func (s *Server) cancelDownstream(inv *sipmsg.Request) {
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
	s.bg.Go(func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.FRTimer)
		defer cancel()
		if _, err := s.cli.Do(ctx, c); err != nil {
			s.log.Debug("sip: CANCEL downstream failed", "to", c.Destination(), "err", err)
		}
	})
}
