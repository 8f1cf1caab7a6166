package txn

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/sip/sipenc"
)

// srvState is a server transaction's state (RFC 3261 §17.2, RFC 6026 §8.7).
type srvState uint8

const (
	sProceeding srvState = iota // no final response yet
	sCompleted                  // a final sent: INVITE non-2xx (Timers G, H) or non-INVITE (Timer J)
	sConfirmed                  // INVITE: the ACK for its non-2xx came (Timer I)
	sAccepted                   // INVITE: a 2xx sent (Timer L)
	sTerminated
)

// ServerTx is a server transaction over UDP. It implements
// sipmsg.ServerTransaction, so that the proxy's request handling is the same
// whichever transaction layer a request came through.
type ServerTx struct {
	l      *Layer
	key    string // "" for a request too broken to key: not stored, no state
	conn   net.PacketConn
	src    string   // the request's source, host:port
	to     net.Addr // where the last response went (first: the source)
	invite bool

	mu        sync.Mutex
	state     srvState
	gen       uint32          // the current timer's generation
	req       *sipmsg.Request // while proceeding: the 487 on CANCEL is built from it
	last      []byte          // the last response sent, replayed to a retransmission
	interval  time.Duration   // Timer G
	endAt     time.Time       // Timer H
	onCancel  sipmsg.FnTxCancel
	onEnd     []sipmsg.FnTxTerminate
	done      chan struct{}
	cancelled bool
}

// Request matches req, read from src on the listener conn, against the server
// transactions (RFC 3261 §17.2.3). A retransmission is absorbed here — the
// last response sent again — as is the ACK for a non-2xx response and a
// CANCEL for a pending INVITE, which gets its 200 and the INVITE its 487 (the
// transaction's OnCancel callback tells the TU). pass is true when the TU must
// handle req: with tx, the new transaction, or with tx nil for an ACK that is
// not the transaction's (the ACK for a 2xx, a transaction of its own).
func (l *Layer) Request(req *sipmsg.Request, conn net.PacketConn, src net.Addr) (tx *ServerTx, pass bool) {
	var buf keyBuf
	switch {
	case req.IsAck():
		if key, ok := serverKey(buf[:0], req, sipmsg.INVITE); ok {
			if tx, found := l.srv.getKey(key); found && tx.ack() {
				return nil, false
			}
		}
		return nil, true
	case req.IsCancel():
		if key, ok := serverKey(buf[:0], req, sipmsg.INVITE); ok {
			if tx, found := l.srv.getKey(key); found {
				tx.cancel(req, src)
				return nil, false
			}
		}
	}
	tx = &ServerTx{l: l, conn: conn, src: req.Source(), to: src, invite: req.IsInvite(), req: req}
	key, ok := serverKey(buf[:0], req, "")
	if !ok {
		return tx, true // the TU answers it (400) through a transaction without state
	}
	tx.key = string(key)
	if old, fresh := l.srv.putNew(tx.key, tx); !fresh {
		old.retransmission()
		return nil, false
	}
	return tx, true
}

// retransmission answers a retransmitted request with the last response
// (RFC 3261 §17.2.1, §17.2.2); in Accepted and Confirmed it is absorbed.
func (tx *ServerTx) retransmission() {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if (tx.state == sProceeding || tx.state == sCompleted) && tx.last != nil {
		_ = writeTo(tx.conn, tx.to, tx.last)
	}
}

// ack takes the ACK for the non-2xx final (Completed → Confirmed, Timer I),
// or a retransmission of it; false when the ACK is not this transaction's.
func (tx *ServerTx) ack() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	switch {
	case !tx.invite:
		return false
	case tx.state == sCompleted:
		tx.state = sConfirmed
		tx.last = nil
		tx.schedule(time.Now().Add(tx.l.t.T4))
		return true
	case tx.state == sConfirmed:
		return true
	}
	return false
}

// cancel answers CANCEL c 200 and, while no final response went out, the
// INVITE 487 (RFC 3261 §9.2), then tells the TU.
func (tx *ServerTx) cancel(c *sipmsg.Request, src net.Addr) {
	// The 200 first, so that the caller stops retransmitting the CANCEL.
	_ = sipenc.WithBytes(sipmsg.NewResponseFromRequest(c, 200, "OK", nil), func(b []byte) error {
		return writeTo(tx.conn, src, b)
	})
	tx.mu.Lock()
	if !tx.invite || tx.state != sProceeding {
		tx.mu.Unlock()
		return
	}
	tx.cancelled = true
	f := tx.onCancel
	_ = sipenc.WithBytes(sipmsg.NewResponseFromRequest(tx.req, 487, "Request Terminated", nil), func(b []byte) error {
		return tx.respondLocked(b, 487)
	})
	tx.mu.Unlock()
	if f != nil {
		f(c)
	}
}

// Respond sends res and moves the state machine: a provisional response is
// kept for retransmissions; a 2xx to an INVITE leads to Accepted, where only
// further 2xx pass (RFC 6026 §8.7: another branch's); any other final to
// Completed, kept as bytes to send again. res goes to its Destination: a
// local reply's is the request's source, a relayed one's comes from the Via
// (RFC 3261 §18.2.2: received, rport), as sipgo sends them.
func (tx *ServerTx) Respond(res *sipmsg.Response) error {
	to := tx.to
	var buf [80]byte
	if d := destination(buf[:0], res); len(d) > 0 && string(d) != tx.src {
		if ap, err := netip.ParseAddrPort(string(d)); err == nil {
			to = net.UDPAddrFromAddrPort(ap)
		}
	}
	return sipenc.WithBytes(res, func(b []byte) error {
		tx.mu.Lock()
		defer tx.mu.Unlock()
		if tx.key == "" {
			return writeTo(tx.conn, to, b)
		}
		switch {
		case tx.state == sProceeding:
		case tx.state == sAccepted && res.IsSuccess():
			return writeTo(tx.conn, to, b)
		default:
			return ErrTerminated
		}
		tx.to = to
		return tx.respondLocked(b, res.StatusCode)
	})
}

// destination appends res.Destination() to dst: the destination set on
// res, else sipgo's "host:port" from the top Via (received and rport, RFC
// 3581 §4), written without the fmt.Sprintf sipgo formats it with on every
// response.
func destination(dst []byte, res *sipmsg.Response) []byte {
	if d := res.MessageData.Destination(); d != "" {
		return append(dst, d...)
	}
	via := res.Via()
	if via == nil {
		return dst
	}
	host, port := via.Host, via.Port
	if port <= 0 {
		port = int(sipmsg.DefaultPort(res.Transport()))
	}
	if r, ok := via.Params.Get("received"); ok && r != "" {
		host = r
	}
	if rp, ok := via.Params.Get("rport"); ok && rp != "" {
		if p, err := strconv.Atoi(rp); err == nil {
			port = p
		}
	}
	dst = append(dst, host...)
	dst = append(dst, ':')
	return strconv.AppendInt(dst, int64(port), 10)
}

// respondLocked sends b, a response with status code, and moves the state
// machine; b is borrowed, what the transaction keeps to send again is a
// copy (a 2xx to an INVITE keeps nothing).
func (tx *ServerTx) respondLocked(b []byte, code int) error {
	err := writeTo(tx.conn, tx.to, b)
	now := time.Now()
	switch {
	case code < 200:
		tx.last = bytes.Clone(b)
		return err
	case tx.invite && code < 300:
		tx.state, tx.last = sAccepted, nil
		tx.schedule(now.Add(tx.l.t.Wait)) // Timer L
	case tx.invite:
		tx.state, tx.last = sCompleted, bytes.Clone(b)
		tx.interval, tx.endAt = tx.l.t.T1, now.Add(64*tx.l.t.T1) // Timers G, H
		tx.schedule(now.Add(tx.interval))
	default:
		tx.state, tx.last = sCompleted, bytes.Clone(b)
		tx.schedule(now.Add(tx.l.t.Wait)) // Timer J
	}
	tx.req, tx.onCancel = nil, nil
	return err
}

// schedule sets the transaction's one timer; tx.mu is held.
func (tx *ServerTx) schedule(at time.Time) {
	tx.gen++
	tx.l.timers.add(at, tx, tx.gen)
}

func (tx *ServerTx) fire(gen uint32, now time.Time) {
	tx.mu.Lock()
	if gen != tx.gen || tx.state == sTerminated {
		tx.mu.Unlock()
		return
	}
	if tx.state == sCompleted && tx.invite && now.Before(tx.endAt) {
		// Timer G: the non-2xx again until its ACK comes, at most until Timer H.
		_ = writeTo(tx.conn, tx.to, tx.last)
		tx.interval = min(2*tx.interval, tx.l.t.T2)
		at := now.Add(tx.interval)
		if at.After(tx.endAt) {
			at = tx.endAt
		}
		tx.schedule(at)
		tx.mu.Unlock()
		return
	}
	f := tx.terminateLocked()
	tx.mu.Unlock()
	f()
}

// terminateLocked ends the transaction; the returned function runs the
// OnTerminate callbacks and must be called without tx.mu.
func (tx *ServerTx) terminateLocked() func() {
	if tx.state == sTerminated {
		return func() {}
	}
	tx.state, tx.last, tx.req, tx.onCancel = sTerminated, nil, nil, nil
	tx.gen++
	if tx.done != nil {
		close(tx.done)
	}
	if tx.key != "" {
		tx.l.srv.remove(tx.key, func(v *ServerTx) bool { return v == tx })
	}
	fs := tx.onEnd
	tx.onEnd = nil
	return func() {
		for _, f := range fs {
			f(tx.key, nil)
		}
	}
}

// Release ends the transaction if it never sent a final response: the TU
// is done with it and will send none (a request it dropped, or a panic), and
// a pending transaction has no timer to end it. One that did answer stays
// for its timers.
func (tx *ServerTx) Release() {
	tx.mu.Lock()
	if tx.state != sProceeding {
		tx.mu.Unlock()
		return
	}
	f := tx.terminateLocked()
	tx.mu.Unlock()
	f()
}

// Terminate implements sipmsg.Transaction.
func (tx *ServerTx) Terminate() {
	tx.mu.Lock()
	f := tx.terminateLocked()
	tx.mu.Unlock()
	f()
}

// OnTerminate implements sipmsg.Transaction.
func (tx *ServerTx) OnTerminate(f sipmsg.FnTxTerminate) bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == sTerminated {
		return false
	}
	tx.onEnd = append(tx.onEnd, f)
	return true
}

// Done implements sipmsg.Transaction.
func (tx *ServerTx) Done() <-chan struct{} {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.done == nil {
		tx.done = make(chan struct{})
		if tx.state == sTerminated {
			close(tx.done)
		}
	}
	return tx.done
}

// Err implements sipmsg.Transaction: a server transaction over UDP ends by
// its timers only.
func (tx *ServerTx) Err() error { return nil }

// Acks implements sipmsg.ServerTransaction: the ACK for a non-2xx ends here
// and the ACK for a 2xx is a request of its own, so none is delivered.
func (tx *ServerTx) Acks() <-chan *sipmsg.Request { return nil }

// OnCancel implements sipmsg.ServerTransaction: f runs (on the read loop)
// when a CANCEL for the pending INVITE comes; false when the transaction is
// no longer pending (cancelled or answered already).
func (tx *ServerTx) OnCancel(f sipmsg.FnTxCancel) bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state != sProceeding || tx.cancelled {
		return false
	}
	tx.onCancel = f
	return true
}

// LocalAddr is the address of the listener the request came in on.
func (tx *ServerTx) LocalAddr() net.Addr { return tx.conn.LocalAddr() }

var _ sipmsg.ServerTransaction = (*ServerTx)(nil)
