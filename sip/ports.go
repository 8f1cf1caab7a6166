package sip

import (
	"context"

	"github.com/sipdispatch/sipdispatch/actors"
	"github.com/sipdispatch/sipdispatch/dispatch"
)

// Dispatcher is what the proxy needs from the destination sets. The actors
// package implements it; the proxy calls it from its per-request goroutines,
// so every method must be safe for concurrent use. Methods taking a ctx may
// block until the set's owner answers; ReportProbe must not block.
type Dispatcher interface {
	// Select picks destinations for req from set setID with alg; for an
	// alg-10 INVITE it also records the call's load entry
	// (Selection.LoadAdded), which may wait for the cluster to commit it
	// within ctx. Errors: dispatch.ErrUnknownSet, dispatch.ErrNoDestination,
	// actors.ErrLoadNotCommitted, actors.ErrLoadInFlight (a retransmission
	// whose first copy is still being placed), or a busy/stopped error.
	Select(ctx context.Context, setID int, alg dispatch.Algorithm, req *dispatch.Request, limit int) (actors.Selection, error)
	// Mark applies ds_mark_dst to the destination uri of set setID.
	Mark(ctx context.Context, setID int, uri string, op dispatch.MarkOp) error
	// LoadConfirm marks the call answered (2xx to an INVITE). It and the
	// other load updates never block and are never dropped: the dispatcher
	// keeps them until they take effect.
	LoadConfirm(setID int, callID string)
	// LoadMove moves the call's load to the destination uri of the set (a
	// failover of an alg-10 INVITE).
	LoadMove(setID int, callID, uri string)
	// LoadRemove ends the call (>=300, CANCEL, BYE); setID -1 = whichever
	// set has the Call-ID.
	LoadRemove(setID int, callID string)
	// ReportProbe hands in the outcome of one keepalive; non-blocking.
	ReportProbe(setID int, uri string, res dispatch.ProbeResult)
	// ProbeTargets lists the destinations due for a keepalive now.
	ProbeTargets(ctx context.Context) ([]actors.ProbeTarget, error)
	// FromSet answers ds_is_from_list: does the source match a destination of
	// set setID, or of any set if setID < 0. Port 0 matches any port and
	// proto "" any transport.
	FromSet(setID int, ip string, port int, proto string) bool
}

// Routes decides what happens to an initial request; *Router satisfies it.
type Routes interface {
	Match(req *dispatch.Request, fromSet func(setID, mode int) bool) *Route
	// Next is Match over the routes after route after (on_empty: next).
	Next(after *Route, req *dispatch.Request, fromSet func(setID, mode int) bool) *Route
}

// Observer counts what the proxy does, for metrics. The proxy calls it on the
// request path, so every method must be cheap, safe for concurrent use and
// never block.
type Observer interface {
	// Request counts a request the proxy handled: route is the matched
	// route's name, "" when none matched, "in-dialog" for requests that
	// follow a Route set.
	Request(method, route string)
	// Selected counts a request sent to a destination of a set (every
	// attempt, failovers included).
	Selected(setID int, uri string)
	// Reply counts a response sent upstream, relayed or local.
	Reply(code int)
}

// nopObserver is the Observer of a Config without one.
type nopObserver struct{}

func (nopObserver) Request(string, string) {}
func (nopObserver) Selected(int, string)   {}
func (nopObserver) Reply(int)              {}
