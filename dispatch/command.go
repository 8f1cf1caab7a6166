package dispatch

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// CommandKind names one kind of replicated state change.
type CommandKind uint8

// The replicated commands; see docs/cluster-design.md, "Commands and the
// actors' apply path". Values are part of the wire format: never reuse or
// renumber one.
const (
	CmdMark         CommandKind = 1  // ds_mark_dst / set_state on one destination, or "all"
	CmdProbe        CommandKind = 2  // one keepalive result, thresholds applied on apply
	CmdLoadAdd      CommandKind = 3  // an algorithm-10 INVITE placed on a destination
	CmdLoadConfirm  CommandKind = 4  // 2xx to the INVITE
	CmdLoadMove     CommandKind = 5  // failover moved the call to another destination
	CmdLoadRemove   CommandKind = 6  // BYE, CANCEL, final >= 300; Set < 0: whichever set has it
	CmdLoadExpire   CommandKind = 7  // sweep of expired entries; Set < 0: every set
	CmdReplaceSets  CommandKind = 8  // reload: every destination in source order
	CmdAddDest      CommandKind = 9  // dispatcher.add: Dests[0] becomes the last source entry
	CmdRemoveDest   CommandKind = 10 // dispatcher.remove: every destination with URI from Set
	maxCommandKind              = CmdRemoveDest
	commandVersion  byte        = 1
	snapshotVersion byte        = 1
)

var kindNames = [...]string{"", "mark", "probe", "load-add", "load-confirm", "load-move", "load-remove", "load-expire", "replace-sets", "add-dest", "remove-dest"}

func (k CommandKind) String() string {
	if k >= 1 && k <= maxCommandKind {
		return kindNames[k]
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Errors of commands and their encodings; test them with errors.Is.
var (
	// ErrMalformed means an encoded command or snapshot could not be decoded.
	ErrMalformed = errors.New("malformed encoding")
	// ErrBadCommand means a command that cannot apply to this state: a kind
	// the SetState does not handle (ReplaceSets is the registry's) or
	// another set's id.
	ErrBadCommand = errors.New("bad command")
)

// Command is one deterministic, self-contained state change
// (docs/cluster-design.md). Every node that applies the same commands in the
// same order to the same state ends in the same state: the proposer's clock
// travels in At, and destinations are addressed by duid, else URI, never by
// index, so a command stays valid across a reload that reorders a set.
type Command struct {
	Kind CommandKind
	// At is the proposer's clock (unix nanoseconds); Apply uses it as now.
	At int64
	// Set is the set id. CmdLoadRemove and CmdLoadExpire take -1 for "any"
	// and "every" set; CmdReplaceSets ignores it.
	Set int
	// DUID addresses the destination when set; otherwise URI does. URI "all"
	// (CmdMark only) marks every destination of the set.
	DUID string
	URI  string
	// CallID is the call of the CmdLoad* kinds.
	CallID string
	// Op is CmdMark's operation.
	Op MarkOp
	// Probe is CmdProbe's keepalive result.
	Probe ProbeResult
	// Dests are CmdReplaceSets' destinations in source order; BuildSets
	// turns them into the sets on every node alike.
	Dests []Destination
}

// DestRef returns the address of d in a command: its duid, else its URI.
func DestRef(d *Destination) (duid, uri string) {
	if d.Attrs.DUID != "" {
		return d.Attrs.DUID, ""
	}
	return "", d.URI
}

// Now returns At as a time in UTC, the same on every node.
func (c *Command) Now() time.Time { return time.Unix(0, c.At).UTC() }

// ApplyResult is what applying a command changed, for the caller to publish.
type ApplyResult struct {
	// Events are the dst-up/dst-down changes, in destination order.
	Events []Event
	// Found reports, for the CmdLoad* kinds but CmdLoadAdd and CmdLoadExpire,
	// whether the Call-ID was known here.
	Found bool
	// Expired is the number of entries CmdLoadExpire removed.
	Expired int
}

// find resolves a command's destination address to an index.
func (s *SetState) find(c *Command) (int, error) {
	i := -1
	if c.DUID != "" {
		i = s.FindDUID(c.DUID)
	} else {
		i = s.Find(c.URI)
	}
	if i < 0 {
		return -1, fmt.Errorf("set %d: %s duid=%q uri=%q: %w", s.ID, c.Kind, c.DUID, c.URI, ErrUnknownDestination)
	}
	return i, nil
}

// Apply applies one committed command with At as the clock. It reads no
// clock and draws randomness only from the set's own seeded source (weight
// tables rebuilt after a state change), which no replicated state depends on,
// so every node that applies the same log ends with the same MarshalState.
// An error leaves the state unchanged; it is as deterministic as a success.
// CmdReplaceSets, CmdAddDest and CmdRemoveDest are not a set's commands: the
// owner of all sets builds them with BuildSets (AddDestination,
// RemoveDestination) and carries each over with CarryOver.
func (s *SetState) Apply(c Command) (ApplyResult, error) {
	var res ApplyResult
	if c.Set != s.ID && !(c.Set < 0 && (c.Kind == CmdLoadRemove || c.Kind == CmdLoadExpire)) {
		return res, fmt.Errorf("set %d: %s for set %d: %w", s.ID, c.Kind, c.Set, ErrBadCommand)
	}
	now := c.Now()
	// Load commands first check against the log clock as it was, then
	// advance it; see LateAddWindow.
	defer s.tick(c.At)
	switch c.Kind {
	case CmdMark:
		if c.DUID == "" && c.URI == "all" {
			for i := range s.Dests {
				if ev, ok := s.Mark(i, c.Op, now); ok {
					res.Events = append(res.Events, ev)
				}
			}
			return res, nil
		}
		i, err := s.find(&c)
		if err != nil {
			return res, err
		}
		if ev, ok := s.Mark(i, c.Op, now); ok {
			res.Events = append(res.Events, ev)
		}
	case CmdProbe:
		i, err := s.find(&c)
		if err != nil {
			return res, err
		}
		if ev, ok := s.Probe(i, c.Probe, now); ok {
			res.Events = append(res.Events, ev)
		}
	case CmdLoadAdd:
		i, err := s.find(&c)
		if err != nil {
			return res, err
		}
		if err := s.loadAddCmd(c.CallID, i, c.At); err != nil {
			return res, fmt.Errorf("set %d: %w", s.ID, err)
		}
		res.Found = true
	case CmdLoadConfirm:
		res.Found = s.LoadConfirm(c.CallID, now)
	case CmdLoadMove:
		i, err := s.find(&c)
		if err != nil {
			return res, err
		}
		res.Found = s.LoadMove(c.CallID, i)
	case CmdLoadRemove:
		res.Found = s.loadRemoveCmd(c.CallID, c.At, c.Set >= 0)
	case CmdLoadExpire:
		res.Expired = s.LoadExpire(now)
		s.tick(c.At)
		s.pruneEnded()
	default:
		return res, fmt.Errorf("set %d: %s: %w", s.ID, c.Kind, ErrBadCommand)
	}
	return res, nil
}

// FlattenSets returns the destinations of sets in an order from which
// BuildSets rebuilds the same sets in the same order, for sets ordered as
// BuildSets orders them: the sets in an order that rebuilds Kamailio's set
// tree (see rebuildOrder), each set's destinations reversed, as BuildSets
// puts the later of equal priorities first. A reload proposes it as
// CmdReplaceSets' Dests, so every node lists the sets in the source's order.
func FlattenSets(sets []Set) []Destination {
	n := 0
	ids := make([]int, len(sets))
	at := make(map[int]int, len(sets))
	for i := range sets {
		n += len(sets[i].Dests)
		ids[i] = sets[i].ID
		at[sets[i].ID] = i
	}
	out := make([]Destination, 0, n)
	for _, id := range rebuildOrder(ids) {
		s := &sets[at[id]]
		for j := len(s.Dests) - 1; j >= 0; j-- {
			out = append(out, s.Dests[j])
		}
	}
	return out
}

// Command encoding: a version byte, then one msgpack array whose field order
// is the schema; new fields are only appended, and a decoder accepts arrays
// longer than it knows (from a newer writer) by skipping the rest.
//
//	[kind, at, set, duid, uri, callID, opSet, opClear, opDirect,
//	 probeCode, probeRTT(ns), probeTimeout, [dest, ...]]
//
// A destination is [setID, uri, flags, priority, raw, duid, weight, rweight,
// maxload, cc, latency, socket, pingFrom, obproxy, [[name, value], ...],
// scheme, host, port, transport, source]: every field, so that nodes need
// not re-parse and cannot disagree on a parse.
const commandFields = 13

// EncodeCommand encodes c in the versioned wire format.
func EncodeCommand(c Command) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(commandVersion)
	e := msgpack.NewEncoder(&buf)
	w := writer{e: e}
	w.arrayLen(commandFields)
	w.uint(uint64(c.Kind))
	w.int(c.At)
	w.int(int64(c.Set))
	w.str(c.DUID)
	w.str(c.URI)
	w.str(c.CallID)
	w.uint(uint64(c.Op.Set))
	w.uint(uint64(c.Op.Clear))
	w.bool(c.Op.Direct)
	w.int(int64(c.Probe.Code))
	w.int(int64(c.Probe.RTT))
	w.bool(c.Probe.Timeout)
	w.arrayLen(len(c.Dests))
	for i := range c.Dests {
		w.dest(&c.Dests[i])
	}
	if w.err != nil {
		return nil, fmt.Errorf("encode %s command: %w", c.Kind, w.err)
	}
	return buf.Bytes(), nil
}

// DecodeCommand decodes what EncodeCommand wrote. Malformed input is an error
// wrapping ErrMalformed, never a panic, and allocates no more than the input
// can hold.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if len(b) == 0 || b[0] != commandVersion {
		return c, fmt.Errorf("decode command: %w: unknown version", ErrMalformed)
	}
	r := newReader(b[1:])
	n := r.arrayLen()
	if r.err == nil && n < commandFields {
		r.fail("%d fields, want %d", n, commandFields)
	}
	c.Kind = CommandKind(r.uintN(uint64(maxCommandKind)))
	if r.err == nil && c.Kind == 0 {
		r.fail("kind 0")
	}
	c.At = r.int()
	c.Set = int(r.intRange(-1, 1<<31-1))
	c.DUID = r.str()
	c.URI = r.str()
	c.CallID = r.str()
	c.Op.Set = Flags(r.uintN(1<<32 - 1))
	c.Op.Clear = Flags(r.uintN(1<<32 - 1))
	c.Op.Direct = r.bool()
	c.Probe.Code = int(r.intRange(0, 999))
	c.Probe.RTT = time.Duration(r.int())
	c.Probe.Timeout = r.bool()
	nd := r.arrayLen()
	if r.err == nil && nd > 0 {
		c.Dests = make([]Destination, nd)
		for i := range c.Dests {
			r.dest(&c.Dests[i])
		}
	}
	r.skipExtra(n, commandFields)
	if r.err == nil && r.r.Len() != 0 {
		r.fail("%d trailing bytes", r.r.Len())
	}
	if r.err != nil {
		return Command{}, fmt.Errorf("decode command: %w", r.err)
	}
	return c, nil
}

// writer encodes with the first error kept, so encoders read as a list of
// fields.
type writer struct {
	e   *msgpack.Encoder
	err error
}

func (w *writer) arrayLen(n int) {
	if w.err == nil {
		w.err = w.e.EncodeArrayLen(n)
	}
}
func (w *writer) uint(v uint64) {
	if w.err == nil {
		w.err = w.e.EncodeUint(v)
	}
}
func (w *writer) int(v int64) {
	if w.err == nil {
		w.err = w.e.EncodeInt(v)
	}
}
func (w *writer) str(v string) {
	if w.err == nil {
		w.err = w.e.EncodeString(v)
	}
}
func (w *writer) bool(v bool) {
	if w.err == nil {
		w.err = w.e.EncodeBool(v)
	}
}
func (w *writer) float(v float64) {
	if w.err == nil {
		w.err = w.e.EncodeFloat64(v)
	}
}

const destFields = 20

func (w *writer) dest(d *Destination) {
	w.arrayLen(destFields)
	w.int(int64(d.SetID))
	w.str(d.URI)
	w.uint(uint64(d.Flags))
	w.int(int64(d.Priority))
	a := &d.Attrs
	w.str(a.Raw)
	w.str(a.DUID)
	w.int(int64(a.Weight))
	w.int(int64(a.RWeight))
	w.int(int64(a.MaxLoad))
	w.int(int64(a.CC))
	w.int(int64(a.Latency))
	w.str(a.Socket)
	w.str(a.PingFrom)
	w.str(a.OBProxy)
	w.arrayLen(len(a.Pairs))
	for _, p := range a.Pairs {
		w.arrayLen(2)
		w.str(p.Name)
		w.str(p.Value)
	}
	w.str(d.Scheme)
	w.str(d.Host)
	w.int(int64(d.Port))
	w.str(d.Transport)
	w.str(d.Source)
}

// reader decodes with the first error kept. Every array length is checked
// against the bytes left (each element takes at least one), so a forged
// length cannot make it allocate; msgpack itself reads strings in bounded
// chunks.
type reader struct {
	r   *bytes.Reader
	d   *msgpack.Decoder
	err error
}

func newReader(b []byte) *reader {
	br := bytes.NewReader(b)
	return &reader{r: br, d: msgpack.NewDecoder(br)}
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
}

func (r *reader) wrap(err error) {
	if err != nil && r.err == nil {
		r.err = fmt.Errorf("%w: %w", ErrMalformed, err)
	}
}

func (r *reader) arrayLen() int {
	if r.err != nil {
		return 0
	}
	n, err := r.d.DecodeArrayLen()
	r.wrap(err)
	if r.err == nil && (n < 0 || n > r.r.Len()) {
		r.fail("array of %d with %d bytes left", n, r.r.Len())
	}
	if r.err != nil {
		return 0
	}
	return n
}

func (r *reader) uintN(limit uint64) uint64 {
	if r.err != nil {
		return 0
	}
	v, err := r.d.DecodeUint64()
	r.wrap(err)
	if r.err == nil && v > limit {
		r.fail("%d out of range", v)
	}
	if r.err != nil {
		return 0
	}
	return v
}

func (r *reader) int() int64 {
	if r.err != nil {
		return 0
	}
	v, err := r.d.DecodeInt64()
	r.wrap(err)
	return v
}

func (r *reader) intRange(lo, hi int64) int64 {
	v := r.int()
	if r.err == nil && (v < lo || v > hi) {
		r.fail("%d out of range %d..%d", v, lo, hi)
	}
	if r.err != nil {
		return 0
	}
	return v
}

func (r *reader) str() string {
	if r.err != nil {
		return ""
	}
	v, err := r.d.DecodeString()
	r.wrap(err)
	return v
}

func (r *reader) bool() bool {
	if r.err != nil {
		return false
	}
	v, err := r.d.DecodeBool()
	r.wrap(err)
	return v
}

func (r *reader) float() float64 {
	if r.err != nil {
		return 0
	}
	v, err := r.d.DecodeFloat64()
	r.wrap(err)
	return v
}

func (r *reader) skip() {
	if r.err == nil {
		r.wrap(r.d.Skip())
	}
}

// skipExtra skips the fields of an n-field array past the known ones.
func (r *reader) skipExtra(n, known int) {
	if r.err == nil && n < known {
		r.fail("%d fields, want %d", n, known)
	}
	for k := known; k < n && r.err == nil; k++ {
		r.skip()
	}
}

const maxInt32 = 1<<31 - 1

func (r *reader) dest(d *Destination) {
	n := r.arrayLen()
	if r.err == nil && n < destFields {
		r.fail("destination of %d fields, want %d", n, destFields)
	}
	d.SetID = int(r.intRange(-maxInt32-1, maxInt32))
	d.URI = r.str()
	d.Flags = Flags(r.uintN(1<<32 - 1))
	d.Priority = int(r.intRange(-maxInt32-1, maxInt32))
	a := &d.Attrs
	a.Raw = r.str()
	a.DUID = r.str()
	a.Weight = int(r.intRange(-maxInt32-1, maxInt32))
	a.RWeight = int(r.intRange(-maxInt32-1, maxInt32))
	a.MaxLoad = int(r.intRange(-maxInt32-1, maxInt32))
	a.CC = int(r.intRange(-maxInt32-1, maxInt32))
	a.Latency = int(r.intRange(-maxInt32-1, maxInt32))
	a.Socket = r.str()
	a.PingFrom = r.str()
	a.OBProxy = r.str()
	np := r.arrayLen()
	if r.err == nil && np > 0 {
		a.Pairs = make([]Attr, np)
		for k := range a.Pairs {
			pn := r.arrayLen()
			a.Pairs[k] = Attr{Name: r.str(), Value: r.str()}
			r.skipExtra(pn, 2)
		}
	}
	d.Scheme = r.str()
	d.Host = r.str()
	d.Port = int(r.intRange(0, 65535))
	d.Transport = r.str()
	d.Source = r.str()
	r.skipExtra(n, destFields)
}
