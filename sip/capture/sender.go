package capture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Config is the capture key (docs/configuration.md#capture).
type Config struct {
	HEP     string   `yaml:"hep"`     // udp:HOST:PORT of the HEP collector; "" = no capture
	NodeID  uint32   `yaml:"node_id"` // capture agent id, to tell the nodes apart in Homer
	Methods []string `yaml:"methods"` // only these methods (a response by its CSeq method); empty = all
	Sample  float64  `yaml:"sample"`  // share of calls captured, chosen by Call-ID: 0 < sample <= 1
	Queue   int      `yaml:"queue"`   // messages waiting for the sender; beyond it they are dropped
}

// DefaultConfig is the capture key's default: off; node id 1, every method,
// every call and a queue of 4,096 messages once hep is set.
func DefaultConfig() Config { return Config{NodeID: 1, Sample: 1, Queue: 4096} }

// Validate reports every bad field of the capture key, each error starting
// with its key path ("capture.hep: ...").
func (c *Config) Validate() error {
	var errs []error
	bad := func(path string, v any, why string) { errs = append(errs, fmt.Errorf("%s: %v: %s", path, v, why)) }
	if c.HEP != "" {
		if _, err := parseHEP(c.HEP); err != nil {
			bad("capture.hep", strconv.Quote(c.HEP), err.Error())
		}
	}
	for i, m := range c.Methods {
		if m == "" || strings.IndexFunc(m, func(r rune) bool { return !isTokenByte(r) }) >= 0 {
			bad(fmt.Sprintf("capture.methods[%d]", i), strconv.Quote(m), "must be a SIP method name")
		}
	}
	if !(c.Sample > 0 && c.Sample <= 1) {
		bad("capture.sample", c.Sample, "must be > 0 and <= 1")
	}
	if c.Queue < 1 {
		bad("capture.queue", c.Queue, "must be >= 1")
	}
	return errors.Join(errs...)
}

// parseHEP checks "udp:HOST:PORT" and returns HOST:PORT.
func parseHEP(s string) (string, error) {
	proto, hostPort, ok := strings.Cut(s, ":")
	if !ok || proto != "udp" {
		return "", errors.New("want udp:HOST:PORT")
	}
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil || host == "" {
		return "", errors.New("want udp:HOST:PORT")
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return "", errors.New("port must be 1..65535")
	}
	return hostPort, nil
}

func isTokenByte(r rune) bool {
	return r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-.!%*_+`'~", r))
}

// Sender sends captured messages to the collector. Capture only filters,
// copies and queues (it runs on the proxy's read loops and writers, which
// must never wait); Run encodes and sends from one goroutine. A full queue
// drops the message and counts it.
type Sender struct {
	nodeID  uint32
	methods map[string]bool // upper case; nil = all
	// sampleBelow: a call is captured when the 32-bit hash of its Call-ID
	// is below it; 1<<32 captures all without hashing.
	sampleBelow uint64
	conn        net.Conn
	queue       chan item
	log         *slog.Logger

	sent, dropped atomic.Uint64
}

// item is one queued message; data is the Sender's own copy.
type item struct {
	proto    Proto
	src, dst netip.AddrPort
	at       time.Time
	data     []byte
}

// New makes the sender of a validated capture config with hep set. The UDP
// socket is connected to the collector now (a name resolves once, here).
func New(c Config, log *slog.Logger) (*Sender, error) {
	addr, err := parseHEP(c.HEP)
	if err != nil {
		return nil, fmt.Errorf("capture.hep: %w", err)
	}
	conn, err := net.Dial("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("capture.hep: %w", err)
	}
	s := &Sender{
		nodeID:      c.NodeID,
		sampleBelow: uint64(c.Sample * (1 << 32)),
		conn:        conn,
		queue:       make(chan item, c.Queue),
		log:         log,
	}
	if len(c.Methods) > 0 {
		s.methods = map[string]bool{}
		for _, m := range c.Methods {
			s.methods[strings.ToUpper(m)] = true
		}
	}
	return s, nil
}

// Sent counts the HEP packets written to the collector.
func (s *Sender) Sent() uint64 { return s.sent.Load() }

// Dropped counts the captured messages not sent: queue full, too large for
// one HEP packet, an address HEP cannot carry, or a failed write.
func (s *Sender) Dropped() uint64 { return s.dropped.Load() }

// Capture queues a copy of msg, read or written on transport (udp, tcp or
// tls) from src to dst, unless the methods or sample filter leaves it out.
// It never blocks and does not keep msg.
func (s *Sender) Capture(transport string, src, dst net.Addr, msg []byte) {
	if !s.wanted(msg) {
		return
	}
	proto, _ := ProtoOf(transport)
	it := item{proto: proto, src: addrPort(src), dst: addrPort(dst), at: time.Now(), data: bytes.Clone(msg)}
	select {
	case s.queue <- it:
	default:
		s.dropped.Add(1)
	}
}

// wanted applies the methods and sample filters.
func (s *Sender) wanted(msg []byte) bool {
	if s.methods != nil && !s.methods[string(methodOf(msg))] {
		return false
	}
	if s.sampleBelow >= 1<<32 {
		return true
	}
	h := fnv.New32a()
	h.Write(header(msg, "call-id", "i"))
	return uint64(h.Sum32()) < s.sampleBelow
}

// Run sends queued messages until ctx ends, then closes the socket; what is
// still queued then is not sent.
func (s *Sender) Run(ctx context.Context) {
	defer s.conn.Close()
	var buf []byte
	for {
		select {
		case <-ctx.Done():
			return
		case it := <-s.queue:
			p := Packet{Src: it.src, Dst: it.dst, Proto: it.proto, Time: it.at, NodeID: s.nodeID,
				CallID: string(header(it.data, "call-id", "i")), Payload: it.data}
			var ok bool
			if buf, ok = Encode(buf[:0], &p); !ok {
				s.dropped.Add(1)
				continue
			}
			if _, err := s.conn.Write(buf); err != nil {
				// A collector that is down refuses every packet: log at
				// debug, the dropped counter is what an operator watches.
				s.dropped.Add(1)
				s.log.Debug("capture: HEP write failed", "err", err)
				continue
			}
			s.sent.Add(1)
		}
	}
}

// addrPort converts a socket address; anything else is the zero value,
// which Encode refuses.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		return a.AddrPort()
	case *net.TCPAddr:
		return a.AddrPort()
	}
	return netip.AddrPort{}
}

// methodOf returns a request's method or a response's CSeq method.
func methodOf(msg []byte) []byte {
	first, _, _ := bytes.Cut(msg, []byte("\r\n"))
	if !bytes.HasPrefix(first, []byte("SIP/")) {
		m, _, _ := bytes.Cut(first, []byte(" "))
		return m
	}
	_, m, _ := bytes.Cut(bytes.TrimSpace(header(msg, "cseq", "")), []byte(" "))
	return bytes.TrimSpace(m)
}

// header returns the value of the first header named long (or its compact
// form short, "" for none) in msg's header part, trimmed; nil if absent. A
// light scan rather than sipgo's parser: it runs per captured message.
func header(msg []byte, long, short string) []byte {
	_, rest, _ := bytes.Cut(msg, []byte("\r\n")) // skip the start line
	for len(rest) > 0 {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(line) == 0 {
			return nil // end of headers
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		name = bytes.TrimSpace(name)
		if bytes.EqualFold(name, []byte(long)) || (short != "" && bytes.EqualFold(name, []byte(short))) {
			return bytes.TrimSpace(value)
		}
	}
	return nil
}
