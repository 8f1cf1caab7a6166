package txn

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// cliState is a client transaction's state (RFC 3261 §17.1, RFC 6026 §8.4).
type cliState uint8

const (
	cCalling    cliState = iota // INVITE Calling, non-INVITE Trying: retransmitting (Timers A/E, B/F)
	cProceeding                 // a provisional came: INVITE stops retransmitting, non-INVITE goes on at T2
	cCompleted                  // a non-2xx final to an INVITE (Timer D, ACK kept) or any final to a non-INVITE (Timer K)
	cAccepted                   // a 2xx to an INVITE (Timer M): its retransmissions go to OnRetransmission
	cTerminated
)

// respQueue bounds the responses waiting for the TU; one place is kept for
// the final response, which is never dropped.
const respQueue = 16

// ClientTx is a client transaction over UDP.
type ClientTx struct {
	l         *Layer
	key       string
	conn      net.PacketConn
	to        net.Addr
	invite    bool
	responses chan *sipmsg.Response
	done      chan struct{}

	mu        sync.Mutex
	state     cliState
	gen       uint32
	req       *sipmsg.Request // until the final: the ACK for a non-2xx is built from it
	msg       []byte          // the request while retransmitting; then the ACK for a non-2xx
	interval  time.Duration   // Timer A/E
	endAt     time.Time       // Timer B/F; for an abandoned INVITE, when it gives up waiting
	err       error
	abandoned bool // the TU stopped reading: nothing more is delivered
	onRetrans sipmsg.FnTxResponse
}

// ErrExists is Send's error for a branch already in use.
var ErrExists = errors.New("client transaction exists")

// Send sends req, which carries our Via with a fresh branch, on the listener
// conn to to, in a new client transaction.
func (l *Layer) Send(req *sipmsg.Request, conn net.PacketConn, to net.Addr) (*ClientTx, error) {
	var buf keyBuf
	k, ok := clientKey(buf[:0], req)
	if !ok {
		return nil, errors.New("txn: request without an RFC 3261 branch")
	}
	key := string(k)
	tx := &ClientTx{
		l: l, key: key, conn: conn, to: to, invite: req.IsInvite(), req: req, msg: wire(req),
		responses: make(chan *sipmsg.Response, respQueue),
		done:      make(chan struct{}),
	}
	if _, fresh := l.cli.putNew(key, tx); !fresh {
		return nil, fmt.Errorf("txn: %s: %w", key, ErrExists)
	}
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if err := writeTo(conn, to, tx.msg); err != nil {
		tx.terminateLocked(fmt.Errorf("%w: %w", sipmsg.ErrTransactionTransport, err))
		return nil, fmt.Errorf("txn: send to %s: %w", to, err)
	}
	now := time.Now()
	tx.interval, tx.endAt = l.t.T1, now.Add(64*l.t.T1)
	tx.schedule(now.Add(tx.interval))
	return tx, nil
}

// Response hands res to the client transaction it answers (RFC 3261
// §17.1.3); false when none does.
func (l *Layer) Response(res *sipmsg.Response) bool {
	var buf keyBuf
	key, ok := clientKey(buf[:0], res)
	if !ok {
		return false
	}
	tx, found := l.cli.getKey(key)
	if !found {
		return false
	}
	tx.receive(res)
	return true
}

func (tx *ClientTx) receive(res *sipmsg.Response) {
	tx.mu.Lock()
	code := res.StatusCode
	switch tx.state {
	case cCalling, cProceeding:
		switch {
		case code < 200:
			if tx.state == cCalling {
				tx.state = cProceeding
				if tx.invite {
					tx.msg = nil // no more retransmissions (§17.1.1.2), no Timer B
					tx.gen++
				}
			}
		case code < 300 && tx.invite:
			tx.state, tx.msg, tx.req = cAccepted, nil, nil
			tx.schedule(time.Now().Add(tx.l.t.Wait)) // Timer M
		case tx.invite:
			tx.state = cCompleted
			tx.msg, tx.req = wire(ackFor(tx.req, res)), nil
			_ = writeTo(tx.conn, tx.to, tx.msg)
			tx.schedule(time.Now().Add(tx.l.t.Wait)) // Timer D
		default:
			tx.state, tx.msg, tx.req = cCompleted, nil, nil
			tx.schedule(time.Now().Add(tx.l.t.T4)) // Timer K
		}
		tx.deliver(res)
		tx.mu.Unlock()
	case cCompleted:
		if tx.invite && code >= 300 {
			_ = writeTo(tx.conn, tx.to, tx.msg) // the final again: so is our ACK
		}
		tx.mu.Unlock()
	case cAccepted:
		f := tx.onRetrans
		tx.mu.Unlock()
		if f != nil && code >= 200 && code < 300 {
			f(res)
		}
	default:
		tx.mu.Unlock()
	}
}

// deliver queues res for the TU without blocking the read loop: a
// provisional response that finds the queue full but for the last place is
// dropped (as UDP could have), a final one always has its place.
func (tx *ClientTx) deliver(res *sipmsg.Response) {
	if tx.abandoned || res.IsProvisional() && len(tx.responses) >= cap(tx.responses)-1 {
		return
	}
	select {
	case tx.responses <- res:
	default:
	}
}

// ackFor is the ACK for a non-2xx final to inv (RFC 3261 §17.1.1.3): inv's
// Request-URI, top Via, Route, From, Call-ID and CSeq number, the response's
// To. Header values are shared with inv and res: the ACK is serialised at
// once and never changed.
func ackFor(inv *sipmsg.Request, res *sipmsg.Response) *sipmsg.Request {
	ack := sipmsg.NewRequest(sipmsg.ACK, inv.Recipient)
	ack.SipVersion = inv.SipVersion
	ack.AppendHeader(inv.Via())
	for _, r := range inv.GetHeaders("Route") {
		ack.AppendHeader(r)
	}
	mf := sipmsg.MaxForwardsHeader(70)
	ack.AppendHeader(&mf)
	ack.AppendHeader(inv.From())
	ack.AppendHeader(res.To())
	ack.AppendHeader(inv.CallID())
	ack.AppendHeader(&sipmsg.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sipmsg.ACK})
	ack.SetBody(nil)
	return ack
}

// schedule sets the transaction's one timer; tx.mu is held.
func (tx *ClientTx) schedule(at time.Time) {
	tx.gen++
	tx.l.timers.add(at, tx, tx.gen)
}

func (tx *ClientTx) fire(gen uint32, now time.Time) {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if gen != tx.gen {
		return
	}
	retransmitting := tx.state == cCalling || tx.state == cProceeding && !tx.invite
	switch {
	case retransmitting && now.Before(tx.endAt):
		// Timer A (doubling) or E (doubling up to T2, T2 once proceeding).
		_ = writeTo(tx.conn, tx.to, tx.msg)
		switch {
		case tx.invite:
			tx.interval *= 2
		case tx.state == cProceeding:
			tx.interval = tx.l.t.T2
		default:
			tx.interval = min(2*tx.interval, tx.l.t.T2)
		}
		at := now.Add(tx.interval)
		if at.After(tx.endAt) {
			at = tx.endAt
		}
		tx.schedule(at)
	case retransmitting:
		tx.terminateLocked(sipmsg.ErrTransactionTimeout) // Timer B or F
	default:
		tx.terminateLocked(nil) // Timer D, K or M; an abandoned INVITE's wait
	}
}

func (tx *ClientTx) terminateLocked(err error) {
	if tx.state == cTerminated {
		return
	}
	tx.state, tx.msg, tx.req, tx.onRetrans, tx.err = cTerminated, nil, nil, nil, err
	tx.gen++
	close(tx.done)
	tx.l.cli.remove(tx.key, func(v *ClientTx) bool { return v == tx })
}

// Responses delivers the transaction's responses, provisional and final, in
// the order they came off the wire.
func (tx *ClientTx) Responses() <-chan *sipmsg.Response { return tx.responses }

// Done is closed when the transaction ends without a final response for the
// TU (a timeout: Err, or Terminate) and when a finished one is forgotten.
func (tx *ClientTx) Done() <-chan struct{} { return tx.done }

// Err is sipmsg.ErrTransactionTimeout after Timer B or F.
func (tx *ClientTx) Err() error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.err
}

// OnRetransmission sets f to receive the 2xx retransmissions to an INVITE
// that come in Accepted state (RFC 6026 §8.4), which the proxy forwards.
func (tx *ClientTx) OnRetransmission(f sipmsg.FnTxResponse) bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == cTerminated {
		return false
	}
	tx.onRetrans = f
	return true
}

// Terminate ends a transaction the TU gives up on. One that has its final
// response already stays, holding only what absorbs retransmissions.
func (tx *ClientTx) Terminate() {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.state == cCompleted || tx.state == cAccepted {
		tx.abandoned = true
		return
	}
	tx.terminateLocked(sipmsg.ErrTransactionTerminated)
}

// Abandon stops delivering responses to the TU but lets a pending INVITE
// finish: after the proxy cancelled it, the 487 still comes here to be
// ACKed. It waits at most 64×T1 for that.
func (tx *ClientTx) Abandon() {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	tx.abandoned = true
	for len(tx.responses) > 0 {
		<-tx.responses
	}
	if tx.state == cProceeding && tx.invite {
		tx.schedule(time.Now().Add(64 * tx.l.t.T1))
	}
}
