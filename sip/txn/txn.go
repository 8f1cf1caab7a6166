// Package txn is the stateful proxy's transaction layer over UDP (RFC 3261
// §17 with RFC 6026's Accepted state). It is driven from the UDP read loop:
// Layer.Request and Layer.Response match a parsed datagram against the
// transactions in place, absorbing retransmissions and relaying responses to
// the waiting client transaction without starting a goroutine per message;
// every retransmission and timeout timer runs on one goroutine per Layer.
// A finished transaction keeps only its key and the bytes it may have to
// send again (its last response, or the ACK of a non-2xx), not the parsed
// messages, for as long as RFC 3261 says it must absorb retransmissions.
package txn

import (
	"bytes"
	"errors"
	"hash/maphash"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	sipmsg "github.com/emiago/sipgo/sip"

	"github.com/sipdispatch/sipdispatch/sip/sipenc"
)

// Timers are the RFC 3261 §17 timer values (Table 4) the layer uses over UDP.
type Timers struct {
	T1, T2, T4 time.Duration
	// Wait is how long a finished transaction stays to absorb
	// retransmissions: Timers D, J, L and M (Kamailio tm's wt_timer).
	Wait time.Duration
}

// Layer holds the server and client transactions of the UDP listeners.
type Layer struct {
	t      Timers
	timers *timers
	srv    shards[*ServerTx]
	cli    shards[*ClientTx]
}

// New starts a Layer; Close stops its timer goroutine.
func New(t Timers) *Layer {
	l := &Layer{t: t, timers: newTimers(t.T1 / 32)}
	l.srv.init()
	l.cli.init()
	return l
}

// Close stops the timers. Transactions still open stay as they are.
func (l *Layer) Close() { l.timers.close() }

// ErrTerminated is what a transaction's methods return after its end.
var ErrTerminated = errors.New("transaction terminated")

// nShards splits each transaction map so that the read loop and the
// goroutines handling requests rarely wait for one another.
const nShards = 32

type shards[T any] struct {
	seed maphash.Seed
	s    [nShards]struct {
		mu sync.Mutex
		m  map[string]T
	}
}

func (s *shards[T]) init() {
	s.seed = maphash.MakeSeed()
	for i := range s.s {
		s.s[i].m = make(map[string]T)
	}
}

func (s *shards[T]) shard(key string) *struct {
	mu sync.Mutex
	m  map[string]T
} {
	return &s.s[maphash.String(s.seed, key)%nShards]
}

// getKey looks key up without making a string of it (a map index by
// string(key) does not allocate); maphash.Bytes hashes as maphash.String.
func (s *shards[T]) getKey(key []byte) (T, bool) {
	sh := &s.s[maphash.Bytes(s.seed, key)%nShards]
	sh.mu.Lock()
	v, ok := sh.m[string(key)]
	sh.mu.Unlock()
	return v, ok
}

// putNew stores v under key unless the key is taken; it returns what is
// stored.
func (s *shards[T]) putNew(key string, v T) (T, bool) {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if old, ok := sh.m[key]; ok {
		return old, false
	}
	sh.m[key] = v
	return v, true
}

// remove deletes key if it still maps to v.
func (s *shards[T]) remove(key string, is func(T) bool) {
	sh := s.shard(key)
	sh.mu.Lock()
	if v, ok := sh.m[key]; ok && is(v) {
		delete(sh.m, key)
	}
	sh.mu.Unlock()
}

// Len counts the transactions held, server and client (for tests and
// benchmarks).
func (l *Layer) Len() (server, client int) {
	for i := range l.srv.s {
		sh := &l.srv.s[i]
		sh.mu.Lock()
		server += len(sh.m)
		sh.mu.Unlock()
	}
	for i := range l.cli.s {
		sh := &l.cli.s[i]
		sh.mu.Lock()
		client += len(sh.m)
		sh.mu.Unlock()
	}
	return server, client
}

const magicCookie = "z9hG4bK"

// serverKey is RFC 3261 §17.2.3's match for a request: the top Via's branch
// with the magic cookie, its sent-by and the method, ACK and CANCEL matching
// as asMethod (INVITE). Without an RFC 3261 branch it falls back to RFC
// 2543's fields (From tag, Call-ID, CSeq, the whole top Via), as sipgo does.
// false when the request lacks what a key needs (Via, CSeq, From, Call-ID).
// It is appended to dst: a lookup builds it on the stack (shards.getKey),
// only a stored key becomes a string.
func serverKey(dst []byte, req *sipmsg.Request, asMethod sipmsg.RequestMethod) ([]byte, bool) {
	via, cseq := req.Via(), req.CSeq()
	if via == nil || cseq == nil {
		return dst, false
	}
	method := cseq.MethodName
	if asMethod != "" {
		method = asMethod
	}
	if branch, _ := via.Params.Get("branch"); len(branch) > len(magicCookie) && strings.HasPrefix(branch, magicCookie) {
		port := via.Port
		if port <= 0 {
			port = sipmsg.DefaultPort(via.Transport)
		}
		dst = append(dst, branch...)
		dst = append(dst, '|')
		dst = append(dst, via.Host...)
		dst = append(dst, '|')
		dst = strconv.AppendInt(dst, int64(port), 10)
		dst = append(dst, '|')
		return append(dst, method...), true
	}
	from, id := req.From(), req.CallID()
	if from == nil || id == nil {
		return dst, false
	}
	tag, _ := from.Params.Get("tag") // none is a value too (sipgo gives up)
	dst = append(dst, tag...)
	dst = append(dst, '|')
	dst = append(dst, id.Value()...)
	dst = append(dst, '|')
	dst = append(dst, method...)
	dst = append(dst, '|')
	dst = strconv.AppendUint(dst, uint64(cseq.SeqNo), 10)
	dst = append(dst, '|')
	return sipenc.AppendHeader(dst, via), true
}

// clientKey is RFC 3261 §17.1.3's match for a response (or the request we
// sent): the top Via's branch and the CSeq method, appended to dst. Our
// branches always carry the magic cookie.
func clientKey(dst []byte, m sipmsg.Message) ([]byte, bool) {
	via, cseq := m.Via(), m.CSeq()
	if via == nil || cseq == nil {
		return dst, false
	}
	branch, _ := via.Params.Get("branch")
	if len(branch) <= len(magicCookie) || !strings.HasPrefix(branch, magicCookie) {
		return dst, false
	}
	method := cseq.MethodName
	if method == sipmsg.ACK {
		method = sipmsg.INVITE
	}
	dst = append(dst, branch...)
	dst = append(dst, '|')
	return append(dst, method...), true
}

// keyBuf is the stack room a key is built in; a longer one spills to the heap.
type keyBuf [128]byte

// wire serialises m into bytes of its own, exactly as long as the message,
// which a transaction may keep.
func wire(m sipmsg.Message) []byte {
	var out []byte
	_ = sipenc.WithBytes(m, func(b []byte) error {
		out = bytes.Clone(b)
		return nil
	})
	return out
}

// writeTo sends b on conn to to.
func writeTo(conn net.PacketConn, to net.Addr, b []byte) error {
	_, err := conn.WriteTo(b, to)
	return err
}
