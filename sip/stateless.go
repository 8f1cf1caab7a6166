package sip

import (
	"encoding/hex"
	"hash/fnv"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// statelessBranch is the Via branch a stateless proxy gives a forwarded
// request (RFC 3261 §16.11): a function of the incoming request's
// transaction, so that a retransmission, its CANCEL and its non-2xx ACK
// get the same branch as the INVITE. An RFC 3261 branch identifies the
// transaction with its sent-by; for an RFC 2543 request the hash covers
// the fields §16.11 names.
func statelessBranch(req *sipmsg.Request) string {
	h := fnv.New64a()
	via := req.Via()
	if b, _ := via.Params.Get("branch"); len(b) > len("z9hG4bK") && strings.HasPrefix(b, "z9hG4bK") {
		h.Write([]byte(b))
		h.Write([]byte(via.SentBy()))
	} else {
		h.Write([]byte(req.CallID().Value()))
		ft, _ := req.From().Params.Get("tag")
		h.Write([]byte(ft))
		h.Write([]byte(req.Recipient.String()))
		h.Write([]byte(via.Value()))
		h.Write([]byte(strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)))
	}
	return "z9hG4bKsd" + hex.EncodeToString(h.Sum(nil))
}

// sentInvite is what the stateless proxy remembers of an INVITE it
// forwarded: enough to send its retransmissions, CANCEL and non-2xx ACK the
// same way.
type sentInvite struct {
	d   *Dispatch
	sel actors.Selection
}

func (e sentInvite) hop() hop {
	return hop{addr: e.sel.Dests[0].HostPort(), proto: e.sel.Dests[0].EffectiveTransport()}
}

// statelessInitial sends an initial request to the first destination of its
// selection; there is no failover without state (SPEC §6 step 5).
func (s *Server) statelessInitial(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel actors.Selection, mf int) {
	dest := &sel.Dests[0]
	branch := statelessBranch(req)
	fwd := s.dispatchOutgoing(req, dr, d, &sel, dest, mf, branch)
	if req.IsInvite() {
		now := time.Now()
		_, again := s.branches.get(branch, now)
		s.branches.put(branch, sentInvite{d: d, sel: sel}, now)
		if sel.LoadAdded && !again && !s.loads.pending.put(dr.CallID, sel.SetID, now) {
			// Untracked, the entry would only leave by expiry.
			s.removeLoad(sel.SetID, dr.CallID)
		}
	}
	if !s.statelessSend(req, tx, fwd) && sel.LoadAdded {
		s.loads.pending.take(dr.CallID)
		s.removeLoad(sel.SetID, dr.CallID)
	}
}

// statelessSend writes fwd without a transaction. When that fails the
// sender gets 503 (tx nil: nobody to tell, as for an ACK).
func (s *Server) statelessSend(req *sipmsg.Request, tx sipmsg.ServerTransaction, fwd *sipmsg.Request) bool {
	if err := s.ua.TransportLayer().WriteMsg(fwd); err != nil {
		s.log.Debug("sip: forward failed", "method", req.Method, "to", fwd.Destination(), "err", err)
		if tx != nil {
			s.reply(req, tx, 503, "Service Unavailable")
		}
		return false
	}
	return true
}

// statelessResponse routes a response back by Via (RFC 3261 §16.11,
// §18.2.2). It runs in the read loop (onWire), so responses leave in the
// order they came; only responses with our Via on top and another below it
// are forwarded (a keepalive's reply has none below).
func (s *Server) statelessResponse(res *sipmsg.Response) {
	vias := res.GetHeaders("Via")
	if len(vias) < 2 || res.CSeq() == nil {
		return
	}
	if via, ok := vias[0].(*sipmsg.ViaHeader); !ok || !s.isSelf(via.Host, via.Port, "sip") {
		s.dropped.Add(1)
		return
	}
	if res.CSeq().MethodName == sipmsg.INVITE && res.StatusCode >= 200 {
		if id := res.CallID(); id != nil {
			if set, ok := s.loads.pending.take(id.Value()); ok {
				s.finalLoad(set, id.Value(), res.StatusCode)
			}
		}
	}
	s.forwardResponse(res)
}

// onUnmatchedResponse gets the responses no client transaction claims. In
// stateful mode it forwards 2xx retransmissions to INVITE, which arrive after
// the client transaction ended and must still reach the caller; the rest are
// late copies of finished transactions. Stateless mode forwarded every
// response already, from the read loop.
func (s *Server) onUnmatchedResponse(res *sipmsg.Response) {
	if s.cfg.Mode == ModeStateless {
		return
	}
	via, cseq := res.Via(), res.CSeq()
	if via == nil || cseq == nil || cseq.MethodName != sipmsg.INVITE || !res.IsSuccess() || !s.isSelf(via.Host, via.Port, "sip") {
		return
	}
	s.forwardResponse(res)
}

// forwardResponse sends a copy of res, without our Via, to the next Via. It
// copies because the read loop (onWire) may still be looking at res.
func (s *Server) forwardResponse(res *sipmsg.Response) {
	res = res.Clone()
	res.RemoveHeader("Via")
	next := res.Via()
	if next == nil {
		s.dropped.Add(1)
		return
	}
	res.SetDestination("")
	res.SetTransport(strings.ToUpper(next.Transport))
	s.obs.Reply(res.StatusCode)
	if err := s.ua.TransportLayer().WriteMsg(res); err != nil {
		s.log.Debug("sip: response not forwarded", "code", res.StatusCode, "err", err)
	}
}
