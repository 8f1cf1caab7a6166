package sip

import (
	"context"
	"sync"
	"sync/atomic"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

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
		fwd := s.dispatchOutgoing(req, dr, d, &sel, &sel.Dests[i], mf, sipmsg.GenerateBranch())
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
