package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// Wire formats. Every payload starts with a format-version byte followed by
// msgpack arrays (field order is the schema; fields are only ever appended).
// Decoders keep accepting every version that old raft logs or snapshots may
// still hold, because raft replays them on restart. Version numbers are never
// reused.
const (
	entryV1    = 1 // raft log entry: a batch of commands
	snapshotV1 = 1 // snapshot stream header
	gossipV1   = 1 // gossiped broadcast (Name set) or leave intent (Name empty)
	metaV1     = 1 // memberlist node meta
	leftV1     = 1 // push/pull state: names of members that left
)

// errMalformed marks payloads that fail to decode; they are rejected and
// counted, never allowed to panic.
var errMalformed = errors.New("malformed payload")

// command is one proposal inside a batch entry. Origin and Seq identify the
// proposer (a per-process random epoch and a counter) so that the proposing
// node, and only it, hands the local Applier's result back to the waiting
// caller; both are 0 for commands nobody waits for.
type command struct {
	Origin uint64
	Seq    uint64
	Cmd    []byte
}

// encodeEntry builds the data of one raft log entry carrying cmds in order.
func encodeEntry(cmds []command) ([]byte, error) {
	size := 8
	for _, c := range cmds {
		size += len(c.Cmd) + 24
	}
	var buf bytes.Buffer
	buf.Grow(size)
	buf.WriteByte(entryV1)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	if err := enc.EncodeArrayLen(len(cmds)); err != nil {
		return nil, fmt.Errorf("encode entry: %w", err)
	}
	for _, c := range cmds {
		if err := encodeCommand(enc, c); err != nil {
			return nil, fmt.Errorf("encode entry: %w", err)
		}
	}
	return buf.Bytes(), nil
}

func encodeCommand(enc *msgpack.Encoder, c command) error {
	if err := enc.EncodeArrayLen(3); err != nil {
		return err
	}
	if err := enc.EncodeUint(c.Origin); err != nil {
		return err
	}
	if err := enc.EncodeUint(c.Seq); err != nil {
		return err
	}
	return enc.EncodeBytes(c.Cmd)
}

// decodeEntry parses a raft log entry made by encodeEntry. The command
// bodies are copies.
func decodeEntry(b []byte) ([]command, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("decode entry: empty: %w", errMalformed)
	}
	if b[0] != entryV1 {
		return nil, fmt.Errorf("decode entry: unknown version %d: %w", b[0], errMalformed)
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	n, err := decodeArrayLen(dec, r.Len(), -1)
	if err != nil {
		return nil, fmt.Errorf("decode entry: %w", err)
	}
	cmds := make([]command, n)
	for i := range cmds {
		if _, err := decodeArrayLen(dec, r.Len(), 3); err != nil {
			return nil, fmt.Errorf("decode entry: command %d: %w", i, err)
		}
		if cmds[i].Origin, err = dec.DecodeUint64(); err != nil {
			return nil, fmt.Errorf("decode entry: command %d origin: %w: %w", i, errMalformed, err)
		}
		if cmds[i].Seq, err = dec.DecodeUint64(); err != nil {
			return nil, fmt.Errorf("decode entry: command %d seq: %w: %w", i, errMalformed, err)
		}
		if cmds[i].Cmd, err = decodeBin(dec, r.Len()); err != nil {
			return nil, fmt.Errorf("decode entry: command %d body: %w: %w", i, errMalformed, err)
		}
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("decode entry: %d trailing bytes: %w", r.Len(), errMalformed)
	}
	return cmds, nil
}

// decodeArrayLen reads an array header. A length that cannot fit in the
// remaining input (each element needs at least one byte) is rejected before
// anything is allocated; want >= 0 requires that exact length.
func decodeArrayLen(dec *msgpack.Decoder, remaining, want int) (int, error) {
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if n < 0 || n > remaining {
		return 0, fmt.Errorf("array length %d with %d bytes left: %w", n, remaining, errMalformed)
	}
	if want >= 0 && n != want {
		return 0, fmt.Errorf("array length %d, want %d: %w", n, want, errMalformed)
	}
	return n, nil
}

// decodeBin reads a msgpack bin (or nil) of at most max bytes. msgpack's own
// DecodeBytes allocates whatever length the input declares, so a forged
// length could exhaust memory; the bound is checked first.
func decodeBin(dec *msgpack.Decoder, max int) ([]byte, error) {
	n, err := dec.DecodeBytesLen()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if n < 0 {
		return nil, nil
	}
	if n > max {
		return nil, fmt.Errorf("%d bytes declared, at most %d allowed: %w", n, max, errMalformed)
	}
	b := make([]byte, n)
	if err := dec.ReadFull(b); err != nil {
		return nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return b, nil
}

// snapshotHeader precedes the Applier's bytes in a snapshot stream.
type snapshotHeader struct {
	Index uint64 // last raft index applied when the snapshot was taken
	Node  string // node that took it (diagnostics)
}

func writeSnapshotHeader(w io.Writer, h snapshotHeader) error {
	if _, err := w.Write([]byte{snapshotV1}); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	enc := msgpack.NewEncoder(w)
	if err := enc.EncodeArrayLen(2); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	if err := enc.EncodeUint(h.Index); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	if err := enc.EncodeString(h.Node); err != nil {
		return fmt.Errorf("write snapshot header: %w", err)
	}
	return nil
}

// readSnapshotHeader consumes the header from r; what remains in r is the
// Applier's snapshot.
func readSnapshotHeader(r *bufio.Reader) (snapshotHeader, error) {
	var h snapshotHeader
	v, err := r.ReadByte()
	if err != nil {
		return h, fmt.Errorf("read snapshot header: %w: %w", errMalformed, err)
	}
	if v != snapshotV1 {
		return h, fmt.Errorf("read snapshot header: unknown version %d: %w", v, errMalformed)
	}
	// r is an io.ByteScanner, so the decoder reads from it directly and
	// leaves the payload unread.
	dec := msgpack.NewDecoder(r)
	if _, err := decodeArrayLen(dec, 1<<10, 2); err != nil {
		return h, fmt.Errorf("read snapshot header: %w", err)
	}
	if h.Index, err = dec.DecodeUint64(); err != nil {
		return h, fmt.Errorf("read snapshot header: index: %w: %w", errMalformed, err)
	}
	if h.Node, err = dec.DecodeString(); err != nil {
		return h, fmt.Errorf("read snapshot header: node: %w: %w", errMalformed, err)
	}
	return h, nil
}

// gossipMsg is a named fact broadcast through memberlist. An empty Name is
// the cluster's own leave intent: From is leaving for good (memberlist alone
// cannot tell a graceful leave from a failure).
type gossipMsg struct {
	From    string
	Name    string
	Payload []byte

	leave bool // derived: Name == ""
}

func encodeGossip(m gossipMsg) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(gossipV1)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(&buf)
	err := enc.EncodeArrayLen(3)
	if err == nil {
		err = enc.EncodeString(m.From)
	}
	if err == nil {
		err = enc.EncodeString(m.Name)
	}
	if err == nil {
		err = enc.EncodeBytes(m.Payload)
	}
	if err != nil {
		return nil, fmt.Errorf("encode gossip: %w", err)
	}
	return buf.Bytes(), nil
}

func decodeGossip(b []byte) (gossipMsg, error) {
	var m gossipMsg
	if len(b) == 0 || b[0] != gossipV1 {
		return m, fmt.Errorf("decode gossip: bad version: %w", errMalformed)
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	_, err := decodeArrayLen(dec, r.Len(), 3)
	if err == nil {
		m.From, err = dec.DecodeString()
	}
	if err == nil {
		m.Name, err = dec.DecodeString()
	}
	if err == nil {
		m.Payload, err = decodeBin(dec, r.Len())
	}
	if err == nil && r.Len() != 0 {
		err = fmt.Errorf("%d trailing bytes", r.Len())
	}
	if err == nil && m.From == "" {
		err = errors.New("empty sender")
	}
	if err != nil {
		return gossipMsg{}, fmt.Errorf("decode gossip: %w: %w", errMalformed, err)
	}
	m.leave = m.Name == ""
	return m, nil
}

// nodeMeta is gossiped in memberlist's node meta (at most 512 bytes).
type nodeMeta struct {
	ID       string // raft server ID (= node name)
	RaftAddr string // raft and forwarding address (host:port)
	Expect   int    // the node's BootstrapExpect; bootstrap needs agreement
}

func encodeMeta(m nodeMeta) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(metaV1)
	enc := msgpack.NewEncoder(&buf)
	err := enc.EncodeArrayLen(3)
	if err == nil {
		err = enc.EncodeString(m.ID)
	}
	if err == nil {
		err = enc.EncodeString(m.RaftAddr)
	}
	if err == nil {
		err = enc.EncodeInt(int64(m.Expect))
	}
	if err != nil {
		return nil, fmt.Errorf("encode meta: %w", err)
	}
	return buf.Bytes(), nil
}

func decodeMeta(b []byte) (nodeMeta, error) {
	var m nodeMeta
	if len(b) == 0 || b[0] != metaV1 {
		return m, fmt.Errorf("decode meta: bad version: %w", errMalformed)
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.NewDecoder(r)
	_, err := decodeArrayLen(dec, r.Len(), 3)
	if err == nil {
		m.ID, err = dec.DecodeString()
	}
	if err == nil {
		m.RaftAddr, err = dec.DecodeString()
	}
	if err == nil {
		m.Expect, err = dec.DecodeInt()
	}
	if err == nil && (m.ID == "" || m.RaftAddr == "") {
		err = errors.New("empty id or address")
	}
	if err != nil {
		return nodeMeta{}, fmt.Errorf("decode meta: %w: %w", errMalformed, err)
	}
	return m, nil
}

// Forwarding RPC frames, exchanged after the muxForward byte. A follower
// multiplexes many requests on one connection; responses carry the request ID
// and may come back in any order.
const (
	reqPropose uint8 = 1 // Body: command; Origin/Seq: its proposer
	reqStatus  uint8 = 2 // Index in the response: the peer's last raft index; Msg: the leader it knows
	reqRemove  uint8 = 3 // Body: raft server ID to remove (a node leaving for good)
)

// Response codes.
const (
	codeOK        uint8 = 0
	codeNotLeader uint8 = 1 // not appended: retry with the current leader
	codeLost      uint8 = 2 // appended, outcome unknown
	codeTooLarge  uint8 = 3
	codeError     uint8 = 4
)

type fwdRequest struct {
	Kind   uint8
	ID     uint64
	Origin uint64
	Seq    uint64
	Body   []byte
}

type fwdResponse struct {
	ID    uint64
	Code  uint8
	Index uint64
	Msg   string
}

func encodeRequest(enc *msgpack.Encoder, r fwdRequest) error {
	err := enc.EncodeArrayLen(5)
	if err == nil {
		err = enc.EncodeUint(uint64(r.Kind))
	}
	if err == nil {
		err = enc.EncodeUint(r.ID)
	}
	if err == nil {
		err = enc.EncodeUint(r.Origin)
	}
	if err == nil {
		err = enc.EncodeUint(r.Seq)
	}
	if err == nil {
		err = enc.EncodeBytes(r.Body)
	}
	return err
}

// decodeRequest reads one request; maxBody bounds the body so a hostile peer
// cannot make us allocate without limit.
func decodeRequest(dec *msgpack.Decoder, maxBody int) (fwdRequest, error) {
	var r fwdRequest
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return r, err
	}
	if n != 5 {
		return r, fmt.Errorf("request: %d fields: %w", n, errMalformed)
	}
	if r.Kind, err = dec.DecodeUint8(); err != nil {
		return r, fmt.Errorf("request kind: %w: %w", errMalformed, err)
	}
	if r.ID, err = dec.DecodeUint64(); err != nil {
		return r, fmt.Errorf("request id: %w: %w", errMalformed, err)
	}
	if r.Origin, err = dec.DecodeUint64(); err != nil {
		return r, fmt.Errorf("request origin: %w: %w", errMalformed, err)
	}
	if r.Seq, err = dec.DecodeUint64(); err != nil {
		return r, fmt.Errorf("request seq: %w: %w", errMalformed, err)
	}
	if r.Body, err = decodeBin(dec, maxBody); err != nil {
		return r, fmt.Errorf("request body: %w", err)
	}
	return r, nil
}

func encodeResponse(enc *msgpack.Encoder, r fwdResponse) error {
	err := enc.EncodeArrayLen(4)
	if err == nil {
		err = enc.EncodeUint(r.ID)
	}
	if err == nil {
		err = enc.EncodeUint(uint64(r.Code))
	}
	if err == nil {
		err = enc.EncodeUint(r.Index)
	}
	if err == nil {
		err = enc.EncodeString(r.Msg)
	}
	return err
}

func decodeResponse(dec *msgpack.Decoder) (fwdResponse, error) {
	var r fwdResponse
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return r, err
	}
	if n != 4 {
		return r, fmt.Errorf("response: %d fields: %w", n, errMalformed)
	}
	if r.ID, err = dec.DecodeUint64(); err != nil {
		return r, fmt.Errorf("response id: %w: %w", errMalformed, err)
	}
	if r.Code, err = dec.DecodeUint8(); err != nil {
		return r, fmt.Errorf("response code: %w: %w", errMalformed, err)
	}
	if r.Index, err = dec.DecodeUint64(); err != nil {
		return r, fmt.Errorf("response index: %w: %w", errMalformed, err)
	}
	if r.Msg, err = dec.DecodeString(); err != nil {
		return r, fmt.Errorf("response msg: %w: %w", errMalformed, err)
	}
	return r, nil
}

// encodeLeft and decodeLeft carry the names of members known to have left in
// memberlist's push/pull exchange, so that every node eventually learns a
// leave even if it missed the gossiped intent.
func encodeLeft(names []string) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte(leftV1)
	enc := msgpack.NewEncoder(&buf)
	if err := enc.EncodeArrayLen(len(names)); err != nil {
		return nil, fmt.Errorf("encode left: %w", err)
	}
	for _, n := range names {
		if err := enc.EncodeString(n); err != nil {
			return nil, fmt.Errorf("encode left: %w", err)
		}
	}
	return buf.Bytes(), nil
}

func decodeLeft(b []byte) ([]string, error) {
	if len(b) == 0 || b[0] != leftV1 {
		return nil, fmt.Errorf("decode left: bad version: %w", errMalformed)
	}
	r := bytes.NewReader(b[1:])
	dec := msgpack.NewDecoder(r)
	n, err := decodeArrayLen(dec, r.Len(), -1)
	if err != nil {
		return nil, fmt.Errorf("decode left: %w", err)
	}
	names := make([]string, n)
	for i := range names {
		if names[i], err = dec.DecodeString(); err != nil {
			return nil, fmt.Errorf("decode left: %w: %w", errMalformed, err)
		}
	}
	return names, nil
}
