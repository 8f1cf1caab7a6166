package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// fwdClient keeps one multiplexed connection per peer raft address for
// forwarding proposals and control requests.
type fwdClient struct {
	local   net.Addr      // source address of its connections; nil = any
	timeout time.Duration // dial and write timeout
	tls     *tls.Config   // nil = plain TCP
	stats   *counters

	mu     sync.Mutex
	conns  map[string]*fwdConn // guarded by mu
	closed bool                // guarded by mu
}

func newFwdClient(local net.Addr, timeout time.Duration, tlsCfg *tls.Config, stats *counters) *fwdClient {
	return &fwdClient{local: local, timeout: timeout, tls: tlsCfg, stats: stats, conns: make(map[string]*fwdConn)}
}

// errUnreachable: the request could not be sent, so nothing was appended.
var errUnreachable = fmt.Errorf("%w: peer unreachable", errNotLeader)

// call sends req to addr and waits for its response. A request that could not
// be sent returns an error wrapping errNotLeader (safe to retry); a
// connection lost after sending returns ErrLeadershipLost.
func (c *fwdClient) call(ctx context.Context, addr string, req fwdRequest) (fwdResponse, error) {
	conn, err := c.get(addr)
	if err != nil {
		return fwdResponse{}, fmt.Errorf("%w: %w", errUnreachable, err)
	}
	id, ch := conn.register()
	req.ID = id
	if err := conn.write(req, c.timeout); err != nil {
		conn.fail(err)
		return fwdResponse{}, fmt.Errorf("%w: send to %s: %w", errUnreachable, addr, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		conn.unregister(id)
		return fwdResponse{}, ctx.Err()
	case <-conn.dead:
		select {
		case r := <-ch:
			return r, nil
		default:
		}
		return fwdResponse{}, fmt.Errorf("%w: connection to %s: %w", ErrLeadershipLost, addr, conn.err)
	}
}

func (c *fwdClient) get(addr string) (*fwdConn, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if fc := c.conns[addr]; fc != nil {
		c.mu.Unlock()
		return fc, nil
	}
	c.mu.Unlock()
	conn, err := dialMux(c.local, addr, muxForward, c.timeout, c.tls)
	if err != nil {
		return nil, err
	}
	fc := &fwdConn{client: c, addr: addr, conn: conn, bw: bufio.NewWriter(conn),
		pending: make(map[uint64]chan fwdResponse), dead: make(chan struct{})}
	fc.enc = msgpack.NewEncoder(fc.bw)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		conn.Close()
		return nil, ErrClosed
	}
	if old := c.conns[addr]; old != nil { // lost a dial race: keep the first
		conn.Close()
		return old, nil
	}
	c.conns[addr] = fc
	go fc.readLoop()
	return fc, nil
}

func (c *fwdClient) remove(fc *fwdConn) {
	c.mu.Lock()
	if c.conns[fc.addr] == fc {
		delete(c.conns, fc.addr)
	}
	c.mu.Unlock()
}

func (c *fwdClient) close() {
	c.mu.Lock()
	c.closed = true
	conns := c.conns
	c.conns = map[string]*fwdConn{}
	c.mu.Unlock()
	for _, fc := range conns {
		fc.fail(ErrClosed)
	}
}

type fwdConn struct {
	client *fwdClient
	addr   string
	conn   net.Conn

	wmu sync.Mutex
	bw  *bufio.Writer    // guarded by wmu
	enc *msgpack.Encoder // guarded by wmu

	mu      sync.Mutex
	pending map[uint64]chan fwdResponse // guarded by mu
	next    uint64                      // guarded by mu

	once sync.Once
	err  error         // set before dead is closed
	dead chan struct{} // closed when the connection is unusable
}

func (fc *fwdConn) register() (uint64, chan fwdResponse) {
	ch := make(chan fwdResponse, 1)
	fc.mu.Lock()
	fc.next++
	id := fc.next
	fc.pending[id] = ch
	fc.mu.Unlock()
	return id, ch
}

func (fc *fwdConn) unregister(id uint64) {
	fc.mu.Lock()
	delete(fc.pending, id)
	fc.mu.Unlock()
}

func (fc *fwdConn) write(req fwdRequest, timeout time.Duration) error {
	fc.wmu.Lock()
	defer fc.wmu.Unlock()
	_ = fc.conn.SetWriteDeadline(time.Now().Add(timeout))
	if err := encodeRequest(fc.enc, req); err != nil {
		return err
	}
	return fc.bw.Flush()
}

func (fc *fwdConn) readLoop() {
	dec := msgpack.NewDecoder(bufio.NewReader(fc.conn))
	for {
		r, err := decodeResponse(dec)
		if err != nil {
			if errors.Is(err, errMalformed) {
				fc.client.stats.badRPC.Add(1)
			}
			fc.fail(err)
			return
		}
		fc.mu.Lock()
		ch := fc.pending[r.ID]
		delete(fc.pending, r.ID)
		fc.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

func (fc *fwdConn) fail(err error) {
	fc.once.Do(func() {
		if err == nil {
			err = io.EOF
		}
		fc.err = err
		close(fc.dead)
		fc.conn.Close()
		fc.client.remove(fc)
	})
}

// codeFor and errFor translate outcomes to the wire and back.
func codeFor(err error) uint8 {
	switch {
	case err == nil:
		return codeOK
	case errors.Is(err, errNotLeader):
		return codeNotLeader
	case errors.Is(err, ErrLeadershipLost):
		return codeLost
	case errors.Is(err, ErrTooLarge):
		return codeTooLarge
	}
	return codeError
}

func errFor(r fwdResponse, addr string) error {
	switch r.Code {
	case codeOK:
		return nil
	case codeNotLeader:
		return fmt.Errorf("%w: %s: %s", errNotLeader, addr, r.Msg)
	case codeLost:
		return fmt.Errorf("%w: %s: %s", ErrLeadershipLost, addr, r.Msg)
	case codeTooLarge:
		return fmt.Errorf("%w: %s: %s", ErrTooLarge, addr, r.Msg)
	}
	return fmt.Errorf("cluster: %s: %s", addr, r.Msg)
}

func responseFor(id, index uint64, err error) fwdResponse {
	r := fwdResponse{ID: id, Code: codeFor(err), Index: index}
	if err != nil {
		r.Msg = err.Error()
	}
	return r
}

// serveForward serves one forwarding connection: a reader (this goroutine)
// submits requests, a writer sends responses as they complete, flushing when
// no more are queued so that a busy connection batches its writes.
func (n *Node) serveForward(conn net.Conn) {
	if !n.trackConn(conn, true) {
		conn.Close()
		return
	}
	defer n.trackConn(conn, false)
	respCh := make(chan fwdResponse, 1024)
	connDone := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		bw := bufio.NewWriter(conn)
		enc := msgpack.NewEncoder(bw)
		for {
			select {
			case r := <-respCh:
				_ = conn.SetWriteDeadline(time.Now().Add(n.cfg.TCPTimeout))
				err := encodeResponse(enc, r)
				if err == nil && len(respCh) == 0 {
					err = bw.Flush()
				}
				if err != nil {
					conn.Close()
					return
				}
			case <-connDone:
				return
			}
		}
	}()
	send := func(r fwdResponse) {
		select {
		case respCh <- r:
		case <-connDone:
		case <-writerDone:
		}
	}
	dec := msgpack.NewDecoder(bufio.NewReader(conn))
	for {
		req, err := decodeRequest(dec, n.cfg.MaxBatchBytes)
		if err != nil {
			if errors.Is(err, errMalformed) || errors.Is(err, ErrTooLarge) {
				n.stats.badRPC.Add(1)
				n.log.Warn("cluster: bad forwarding request", "remote", conn.RemoteAddr(), "err", err)
			}
			break
		}
		switch req.Kind {
		case reqPropose:
			n.stats.forwardServed.Add(1)
			id := req.ID
			p := &proposal{cmd: command{Origin: req.Origin, Seq: req.Seq, Cmd: req.Body},
				done: func(index uint64, err error) { send(responseFor(id, index, err)) }}
			if err := n.batcher.submit(p, connDone); err != nil {
				send(responseFor(id, 0, err))
			}
		case reqStatus:
			_, leader := n.raft.LeaderWithID()
			send(fwdResponse{ID: req.ID, Index: n.raft.LastIndex(), Msg: string(leader)})
		case reqRemove:
			go func(id uint64, server string) {
				send(responseFor(id, 0, n.removeServer(server)))
			}(req.ID, string(req.Body))
		default:
			n.stats.badRPC.Add(1)
			send(responseFor(req.ID, 0, fmt.Errorf("unknown request kind %d", req.Kind)))
		}
	}
	close(connDone)
	conn.Close()
	<-writerDone
}
