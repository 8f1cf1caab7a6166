package sip

import (
	"encoding/binary"
	"encoding/hex"
	"net"
	"strconv"
	"strings"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
	"github.com/sipdispatch/sipdispatch/sip/sipenc"
)

// statelessBranch is the Via branch a stateless proxy gives a forwarded
// request (RFC 3261 §16.11): a function of the incoming request's
// transaction, so that a retransmission, its CANCEL and its non-2xx ACK
// get the same branch as the INVITE. An RFC 3261 branch identifies the
// transaction with its sent-by; for an RFC 2543 request the hash covers
// the fields §16.11 names.
func statelessBranch(req *sipmsg.Request) string {
	// The hashed fields are written into a buffer on the stack and hashed
	// with FNV-1a there: hash/fnv's Write through its interface, SentBy and
	// the URI's String made five allocations of each branch.
	var in [256]byte
	b := in[:0]
	via := req.Via()
	if br, _ := via.Params.Get("branch"); len(br) > len("z9hG4bK") && strings.HasPrefix(br, "z9hG4bK") {
		b = append(b, br...)
		b = append(b, via.Host...) // via.SentBy()
		if via.Port > 0 {
			b = append(b, ':')
			b = strconv.AppendInt(b, int64(via.Port), 10)
		}
	} else {
		b = append(b, req.CallID().Value()...)
		ft, _ := req.From().Params.Get("tag")
		b = append(b, ft...)
		b = sipenc.AppendURI(b, &req.Recipient)
		b = sipenc.AppendValue(b, via)
		b = strconv.AppendUint(b, uint64(req.CSeq().SeqNo), 10)
	}
	h := uint64(14695981039346656037) // FNV-1a 64 (hash/fnv's New64a)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	var out [len("z9hG4bKsd") + 16]byte
	n := copy(out[:], "z9hG4bKsd")
	var sum [8]byte
	binary.BigEndian.PutUint64(sum[:], h)
	hex.Encode(out[n:], sum[:])
	return string(out[:])
}

// statelessForwarder is the stateless proxy (proxy.mode: stateless, RFC 3261
// §16.11): requests and responses are forwarded without transactions, UDP
// from the read loop (statelessRead); the branch memory (Server.branches)
// sends retransmissions, CANCELs and non-2xx ACKs where their INVITE went.
type statelessForwarder struct {
	*Server
}

// tagReply gives a local reply a To tag the proxy recognises in its ACK
// (tagLocalReply).
func (s *statelessForwarder) tagReply(req *sipmsg.Request, res *sipmsg.Response) {
	tagLocalReply(req, res)
}

// trying sends nothing: without a transaction there is nothing to stop the
// caller's retransmissions, which are forwarded again (RFC 3261 §16.11).
func (s *statelessForwarder) trying(*sipmsg.Request, sipmsg.ServerTransaction) {}

// takeOver sends an INVITE retransmission the way the original went,
// whatever the algorithm would pick now (RFC 3261 §16.11), and hands an
// algorithm-10 INVITE off the read loop to a bounded pool (Server.handoff),
// because placing it may wait for the cluster to commit its load entry.
func (s *statelessForwarder) takeOver(req *sipmsg.Request, tx sipmsg.ServerTransaction, rt *Route, dr *dispatch.Request, mf int) bool {
	if !req.IsInvite() {
		return false
	}
	if sent, ok := s.branches.get(statelessBranch(req), time.Now()); ok {
		s.forwardInitial(req, tx, dr, sent.d, sent.sel, mf)
		return true
	}
	if rt.Dispatch.Alg == dispatch.AlgCallLoad {
		// The pool's goroutine writes at once: the loop's batch is the
		// loop's alone.
		ptx := direct(tx)
		if !s.handoff.Go(func() { s.dispatchInitial(req, ptx, rt, dr, mf) }) {
			s.unavailable(req, tx)
		}
		return true
	}
	return false
}

// forwardInDialog sends an in-dialog request on without a transaction, with
// a branch derived from the incoming one.
func (s *statelessForwarder) forwardInDialog(req *sipmsg.Request, tx sipmsg.ServerTransaction, h hop, mf, pop int) {
	s.statelessSend(req, tx, s.outgoing(req, h, mf, pop, statelessBranch(req)), nil)
}

// ackBranch absorbs the ACK for a reply of our own (tagLocalReply), sends
// the hop-by-hop ACK for a non-2xx where its INVITE went (branch memory),
// and gives any other ACK the branch derived from its own.
func (s *statelessForwarder) ackBranch(req *sipmsg.Request, tx sipmsg.ServerTransaction, mf int) (string, bool) {
	if isLocalReplyAck(req) {
		return "", true
	}
	branch := statelessBranch(req)
	if sent, ok := s.branches.get(branch, time.Now()); ok {
		s.statelessSend(req, tx, s.outgoing(req, sent.to, mf, 0, branch), nil)
		return "", true
	}
	return branch, false
}

// onCancel sends a CANCEL that matched no transaction after its INVITE
// (RFC 3261 §16.11), which the branch memory knows, else routes it like the
// INVITE was; either way the call's pending load entry ends.
func (s *statelessForwarder) onCancel(req *sipmsg.Request, tx sipmsg.ServerTransaction) {
	if set, ok := s.loads.pending.take(req.CallID().Value()); ok {
		s.removeLoad(set, req.CallID().Value())
	}
	branch := statelessBranch(req)
	sent, ok := s.branches.get(branch, time.Now())
	if !ok {
		s.initial(req, tx)
		return
	}
	mf, ok := s.nextMaxForwards(req)
	if !ok {
		s.reply(req, tx, 483, "Too Many Hops")
		return
	}
	s.statelessSend(req, tx, s.outgoing(req, sent.to, mf, 0, branch), nil)
}

// localTagPrefix starts the To tag of the stateless proxy's own replies.
const localTagPrefix = "sdlocal."

// tagLocalReply gives a reply the stateless proxy sends itself a To tag it
// will recognise: without a server transaction (RFC 3261 §16.11) the tag is
// all that tells the ACK for that reply, which ends here (§17.2.1), from an
// ACK to forward. The tag is a function of the request's transaction, so a
// retransmission gets the same one.
func tagLocalReply(req *sipmsg.Request, res *sipmsg.Response) {
	to := res.To()
	if res.StatusCode <= 100 || to == nil || req.To() == nil || req.To().Params.Has("tag") {
		return
	}
	to.Params.Add("tag", localTagPrefix+strings.TrimPrefix(statelessBranch(req), "z9hG4bKsd"))
}

// isLocalReplyAck reports whether ack acknowledges a reply of tagLocalReply.
func isLocalReplyAck(ack *sipmsg.Request) bool {
	tag, _ := ack.To().Params.Get("tag")
	return strings.HasPrefix(tag, localTagPrefix)
}

// sentInvite is what the stateless proxy remembers of an INVITE it
// forwarded: enough to send its retransmissions, CANCEL and non-2xx ACK the
// same way.
type sentInvite struct {
	d   *Dispatch
	sel actors.Selection
	to  hop // where it went: a name's SRV target is not drawn again
}

// forwardInitial sends an initial request to the first destination of its
// selection; there is no failover without state (docs/proxy.md, "How the proxy
// handles a request", step 8).
func (s *statelessForwarder) forwardInitial(req *sipmsg.Request, tx sipmsg.ServerTransaction, dr *dispatch.Request, d *Dispatch, sel actors.Selection, mf int) {
	dest := &sel.Dests[0]
	branch := statelessBranch(req)
	now := time.Now()
	var h hop
	prev, again := s.branches.get(branch, now)
	if again = again && req.IsInvite(); again {
		h = prev.to
	} else {
		var err error
		if h, err = s.destHop(dest); err != nil {
			s.reply(req, tx, 503, "Service Unavailable")
			if sel.LoadAdded {
				s.removeLoad(sel.SetID, dr.CallID)
			}
			return
		}
	}
	fwd := s.dispatchOutgoing(req, tx, dr, d, &sel, dest, h, mf, branch)
	if req.IsInvite() {
		s.branches.put(branch, sentInvite{d: d, sel: sel, to: h}, now)
		if sel.LoadAdded && !again && !s.loads.pending.put(dr.CallID, sel.SetID, now) {
			// Untracked, the entry would only leave by expiry.
			s.removeLoad(sel.SetID, dr.CallID)
		}
	}
	var failed func()
	if sel.LoadAdded {
		failed = func() {
			s.loads.pending.take(dr.CallID)
			s.removeLoad(sel.SetID, dr.CallID)
		}
	}
	s.statelessSend(req, tx, fwd, failed)
}

// statelessRead is stateless mode's fast path, the hook (udpHook) that every
// UDP socket's read loop (udpConn.serve) runs on each datagram it reads.
// A stateless proxy keeps no transaction
// (RFC 3261 §16.11), so requests and the responses it relays are handled
// here, in arrival order, instead of going through sipgo's transaction
// layer, which would start a goroutine and a server transaction for each. A
// response goes to the byte relay first (relayBytes), which sends it on
// without parsing it when it can. Everything it sends over UDP joins out,
// the loop's batch: a request carries out in its wireTx (socket.loopTx), a
// relayed response directly.
// It hands back to sipgo what sipgo must still see: datagrams that do not
// parse (sipgo drops and counts them), keepalive CRLFs, the replies to our
// own probes, which their client transactions wait for, and anything read
// off a socket that is not one of our listeners. TCP and TLS do not come
// here: sipgo reads them.
func (s *statelessForwarder) statelessRead(p sipmsg.TransportReadProps, data []byte, out *sendBatch) ([]byte, error) {
	if r, ok := scanResponse(data); ok && s.udpListener(p.LocalAddr) != nil && s.relayBytes(data, &r, out) {
		return nil, nil
	}
	k, msg := s.ownDatagram(p, data)
	if msg == nil {
		return data, nil
	}
	switch m := msg.(type) {
	case *sipmsg.Request:
		s.onRequest(m, k.loopTx(out))
	case *sipmsg.Response:
		if countHeaders(m, "Via") < 2 {
			return data, nil // our probe's reply
		}
		if s.relayable(m) {
			s.relayUpstream(m, out) // the read loop owns m: nothing else saw it
		}
	}
	return nil, nil
}

// udpListener returns our UDP listener with local address a, or nil. The
// socket reports the same net.Addr on every read, so this compares pointers.
func (s *Server) udpListener(a net.Addr) *socket {
	for _, k := range s.socks {
		if k.tx == nil {
			continue
		}
		if k.pc.LocalAddr() == a {
			return k
		}
		for _, pc := range k.more {
			if pc.LocalAddr() == a {
				return k
			}
		}
	}
	return nil
}

// wireTx stands in for the server transaction a stateless proxy does not
// keep (RFC 3261 §16.11): a local reply leaves from the listener the request
// came in on, k. It also carries which writer the request's handling uses:
// out, the batch of the read loop handling it (loopTx), or, with out nil
// (k.tx), the socket at once. In stateless mode the routing code only calls
// Respond; the embedded interface is nil.
type wireTx struct {
	sipmsg.ServerTransaction
	k   *socket
	out *sendBatch
}

// Respond writes res without a transaction: no retransmission, no state.
// Into a batch, a failure is known only at its flush, which logs it.
func (t *wireTx) Respond(res *sipmsg.Response) error {
	if t.out != nil {
		t.out.writeMsg(t.k.pc, res, nil)
		return nil
	}
	return t.k.w.WriteMsg(res)
}

// loopTx is k's wireTx for the read loop whose batch is out, made once per
// loop and listener; with out nil, k's own, which writes at once.
func (k *socket) loopTx(out *sendBatch) *wireTx {
	if out == nil {
		return k.tx
	}
	for _, t := range out.txs {
		if t.k == k {
			return t
		}
	}
	t := &wireTx{k: k, out: out}
	out.txs = append(out.txs, t)
	return t
}

// batchOf is the read loop's batch a write made for tx joins; nil (write at
// once) unless tx is a loop's wireTx.
func batchOf(tx sipmsg.ServerTransaction) *sendBatch {
	if t, ok := tx.(*wireTx); ok {
		return t.out
	}
	return nil
}

// direct is tx for a goroutine other than the read loop: a loop's wireTx
// becomes its listener's, which writes at once.
func direct(tx sipmsg.ServerTransaction) sipmsg.ServerTransaction {
	if t, ok := tx.(*wireTx); ok {
		return t.k.tx
	}
	return tx
}

// onWire routes back by Via a response that came over TCP or TLS, from the
// read loop, so responses leave in the order they came.
func (s *statelessForwarder) onWire(msg sipmsg.Message) {
	res, ok := msg.(*sipmsg.Response)
	if !ok {
		return
	}
	if s.relayable(res) {
		s.forwardResponse(res)
	}
}

// relayable checks a response for relaying back by Via (RFC 3261 §16.11,
// §18.2.2): only responses with our Via on top and another below it go back
// (a keepalive's reply has none below); relayFrom does the rest.
func (s *statelessForwarder) relayable(res *sipmsg.Response) bool {
	if countHeaders(res, "Via") < 2 || res.CSeq() == nil {
		return false
	}
	callID := ""
	if id := res.CallID(); id != nil {
		callID = id.Value()
	}
	via := res.Via()
	return s.relayFrom(via.Host, via.Port, res.CSeq().MethodName == sipmsg.INVITE, res.StatusCode, callID)
}

// relayFrom is what both relay paths (relayable, relayBytes) do with a
// response whose top Via names viaHost:viaPort: false, counted as dropped,
// unless that is us; a final reply to an INVITE ends the call's pending
// load entry.
func (s *statelessForwarder) relayFrom(viaHost string, viaPort int, invite bool, status int, callID string) bool {
	if !s.isSelf(viaHost, viaPort, "sip") {
		s.dropped.Add(1)
		return false
	}
	if invite && status >= 200 && callID != "" {
		if set, ok := s.loads.pending.take(callID); ok {
			s.finalLoad(set, callID, status)
		}
	}
	return true
}

// onUnmatchedResponse does nothing: stateless mode forwarded every response
// already, from the read loop (statelessRead, onWire).
func (s *statelessForwarder) onUnmatchedResponse(*sipmsg.Response) {}
