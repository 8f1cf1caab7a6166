package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/raft"
)

// Connections to the raft port start with one byte that selects the protocol,
// as Consul and Nomad multiplex their RPC port: raft's own transport, or our
// proposal-forwarding RPC. One port keeps firewall rules and the gossiped
// address simple.
const (
	muxRaft    byte = 'R'
	muxForward byte = 'F'
)

// mux owns the raft-port listener and hands each accepted connection to raft
// or to the forwarding server according to its first byte. With TLS, ln is a
// TLS listener and the first byte is the first byte inside the TLS stream.
type mux struct {
	ln        net.Listener
	advertise net.Addr
	local     net.Addr      // source address of outgoing connections; nil = the kernel's choice
	timeout   time.Duration // for the TLS handshake and reading the selector byte
	serveFwd  func(net.Conn)
	dialTLS   *tls.Config // for raft's outgoing connections; nil = plain TCP
	stats     *counters
	log       *slog.Logger

	raftCh chan net.Conn
	closed chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
}

func newMux(ln net.Listener, advertise net.Addr, timeout time.Duration, serveFwd func(net.Conn), dialTLS *tls.Config, stats *counters, log *slog.Logger) *mux {
	return &mux{ln: ln, advertise: advertise, local: sourceAddr(ln.Addr()), timeout: timeout, serveFwd: serveFwd,
		dialTLS: dialTLS, stats: stats, log: log, raftCh: make(chan net.Conn), closed: make(chan struct{})}
}

// sourceAddr is the address outgoing cluster connections are made from: the
// bound IP when it is a specific one. Without it the kernel picks the source
// (on loopback always 127.0.0.1), so a firewall rule between two nodes'
// addresses would not match a node's outgoing raft and gossip connections.
func sourceAddr(bound net.Addr) net.Addr {
	a, ok := bound.(*net.TCPAddr)
	if !ok || a.IP == nil || a.IP.IsUnspecified() {
		return nil
	}
	return &net.TCPAddr{IP: a.IP, Zone: a.Zone}
}

func (m *mux) run() {
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		for {
			conn, err := m.ln.Accept()
			if err != nil {
				select {
				case <-m.closed:
					return
				default:
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				m.log.Error("cluster: raft port accept failed", "err", err)
				return
			}
			m.wg.Add(1)
			go func() {
				defer m.wg.Done()
				m.route(conn)
			}()
		}
	}()
}

func (m *mux) route(conn net.Conn) {
	var b [1]byte
	_ = conn.SetDeadline(time.Now().Add(m.timeout))
	if tc, ok := conn.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			m.stats.tlsFailed.Add(1)
			m.log.Warn("cluster: TLS handshake on raft port failed", "remote", conn.RemoteAddr(), "err", err)
			conn.Close()
			return
		}
	}
	if _, err := conn.Read(b[:]); err != nil {
		conn.Close()
		return
	}
	_ = conn.SetDeadline(time.Time{})
	switch b[0] {
	case muxRaft:
		select {
		case m.raftCh <- conn:
		case <-m.closed:
			conn.Close()
		}
	case muxForward:
		m.serveFwd(conn)
	default:
		m.stats.badRPC.Add(1)
		m.log.Warn("cluster: unknown protocol byte on raft port", "byte", b[0], "remote", conn.RemoteAddr())
		conn.Close()
	}
}

func (m *mux) close() {
	m.once.Do(func() {
		close(m.closed)
		m.ln.Close()
	})
	m.wg.Wait()
}

// raftLayer is the raft.StreamLayer over the mux.
type raftLayer struct{ m *mux }

var _ raft.StreamLayer = raftLayer{}

func (l raftLayer) Accept() (net.Conn, error) {
	select {
	case c := <-l.m.raftCh:
		return c, nil
	case <-l.m.closed:
		return nil, net.ErrClosed
	}
}

// Close is called by raft's transport on shutdown; the mux itself is closed by
// the node after raft.
func (l raftLayer) Close() error { return nil }

func (l raftLayer) Addr() net.Addr { return l.m.advertise }

func (l raftLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialMux(l.m.local, string(addr), muxRaft, timeout, l.m.dialTLS)
}

// dialMux connects to a raft port from local (nil: any), completes the TLS
// handshake when tlsCfg is set, and sends the protocol byte.
func dialMux(local net.Addr, addr string, proto byte, timeout time.Duration, tlsCfg *tls.Config) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: local}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if tlsCfg != nil {
		tc := tls.Client(conn, tlsCfg)
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, fmt.Errorf("dial %s: TLS: %w", addr, err)
		}
		conn = tc
	}
	if _, err := conn.Write([]byte{proto}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	return conn, nil
}

// boundTransport is memberlist's network transport with its outgoing TCP
// connections (push/pull, fallback probes) made from the gossip bind IP, as
// its UDP packets already are; see sourceAddr.
type boundTransport struct {
	*memberlist.NetTransport
	local net.Addr
}

// DialAddressTimeout implements memberlist.NodeAwareTransport.
func (t boundTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// DialTimeout implements memberlist.Transport.
func (t boundTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout, LocalAddr: t.local}
	return d.Dial("tcp", addr)
}

// gossipTransport binds memberlist's UDP and TCP listeners on host:port (port
// 0 picks a free port for both, retried as memberlist itself does when the
// UDP port turns out taken).
func gossipTransport(host string, port int, logger *log.Logger) (boundTransport, error) {
	nc := &memberlist.NetTransportConfig{BindAddrs: []string{host}, BindPort: port, Logger: logger}
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for range tries {
		var nt *memberlist.NetTransport
		if nt, err = memberlist.NewNetTransport(nc); err == nil {
			ip := net.ParseIP(host)
			return boundTransport{NetTransport: nt, local: sourceAddr(&net.TCPAddr{IP: ip})}, nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return boundTransport{}, fmt.Errorf("start gossip on %s: %w", net.JoinHostPort(host, strconv.Itoa(port)), err)
}
