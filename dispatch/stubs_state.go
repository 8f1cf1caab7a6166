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
