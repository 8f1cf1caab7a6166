package dispatch

// TEMPORARY contract stubs for the list/health/load helper; replaced by
// list.go, attrs.go, health.go, load.go. Must not survive to a landed commit.

import (
	"io"
	"time"
)

// ParseList parses a Kamailio list file. It returns the sets built from the
// good lines in selection order and, if any line is bad, a *ListError naming
// every bad line as file:line: reason.
func ParseList(r io.Reader, name string) ([]Set, error) { return nil, errTODO }

// ParseReplyCodes parses ds_ping_reply_codes ("class=2;code=403").
func ParseReplyCodes(s string) (ReplyCodes, error) { return ReplyCodes{}, nil }

// ReplyCodes are the keepalive replies counted as success besides 200.
type ReplyCodes struct{}

// LoadTable is the call-load table: Call-ID -> entry.
type LoadTable struct{}

func newLoadTable(hashSize int) LoadTable { return LoadTable{} }

// Event is a state change between selectable and not (dst-up / dst-down).
type Event struct {
	SetID    int
	URI      string
	DUID     string
	Up       bool
	Old, New Flags
}

// MarkOp is a parsed ds_mark_dst / set_state state.
type MarkOp struct{ Set, Clear Flags }

// ParseMarkState parses "i", "a", "t", "d", "p", "ip", "0", "1", "2" ...
func ParseMarkState(s string) (MarkOp, error) { return MarkOp{}, errTODO }

// Mark applies op to destination i (ds_mark_dst / set_state).
func (s *SetState) Mark(i int, op MarkOp, now time.Time) (Event, bool) { return Event{}, false }

// ProbeResult is the outcome of one keepalive to a destination.
type ProbeResult struct {
	Code    int           // final reply code; 0 when Timeout
	RTT     time.Duration // round trip of the reply
	Timeout bool          // no reply (or a transport error)
}

// Probe applies a keepalive result to destination i: success per
// ds_ping_reply_codes, thresholds of SPEC §5, latency stats when enabled.
func (s *SetState) Probe(i int, res ProbeResult, now time.Time) (Event, bool) { return Event{}, false }

// ShouldProbe reports whether destination i gets keepalives now, per
// ds_probing_mode and its flags.
func (s *SetState) ShouldProbe(i int) bool { return false }

// LoadAdd records a call on destination i (algorithm 10).
func (s *SetState) LoadAdd(callID string, i int, now time.Time) error { return errTODO }

// LoadConfirm marks the call answered (2xx); false if unknown.
func (s *SetState) LoadConfirm(callID string, now time.Time) bool { return false }

// LoadRemove ends the call (BYE, >=300, CANCEL); false if unknown.
func (s *SetState) LoadRemove(callID string) bool { return false }

// LoadExpire removes entries whose lifetime has passed at now; returns how many.
func (s *SetState) LoadExpire(now time.Time) int { return 0 }

// CarryOver copies runtime state and call load from old into s, matching
// destinations by Destination.Key (duid, else set+URI).
func (s *SetState) CarryOver(old *SetState) {}

// LoadCount returns the number of call-load entries.
func (s *SetState) LoadCount() int { return 0 }
