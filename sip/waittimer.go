package sip

import (
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"
)

// MaxWaitTimer is the longest proxy.wt_timer: RFC 3261's 64×T1, T1 = 500 ms.
const MaxWaitTimer = 32 * time.Second

var waitTimerMu sync.Mutex

// SetWaitTimer sets how long a finished sipgo transaction over UDP stays to
// absorb retransmissions (Kamailio tm's wt_timer): sipgo's Timers D, J, L and M,
// which RFC 3261 sets to 32 s (64×T1). A shorter time holds less memory per
// finished call (docs/benchmarks.md) at the price that a retransmission
// arriving later is taken as a new request. 0 keeps RFC 3261's values.
//
// The stateful proxy's own UDP transactions (sip/txn) take
// Config.WaitTimer instead; sipgo's remain for probes and for requests that
// come in over TCP or TLS. sipgo keeps these timers in package variables, so the setting is
// process-wide: call it once, before any Server starts (cmd/sipdispatch
// does, from proxy.wt_timer).
func SetWaitTimer(d time.Duration) {
	if d <= 0 {
		d = MaxWaitTimer
	}
	waitTimerMu.Lock()
	defer waitTimerMu.Unlock()
	sipmsg.Timer_D, sipmsg.Timer_J, sipmsg.Timer_L, sipmsg.Timer_M = d, d, d, d
}
