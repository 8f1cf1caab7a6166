package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testCA is a certificate authority made in the test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue returns a node certificate for both server and client use.
func (ca *testCA) issue(t *testing.T, name string) *TLSConfig {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return &TLSConfig{Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, CA: ca.pool}
}

// withTLS gives each node of a test cluster a certificate from ca.
func withTLS(t *testing.T, ca *testCA) func(*Config) {
	return func(c *Config) { c.TLS = ca.issue(t, c.NodeName) }
}

// Three nodes with certificates from one CA form a cluster; proposals commit
// through the leader and are forwarded from followers, all over TLS.
func TestTLSClusterCommits(t *testing.T) {
	ca := newTestCA(t, "cluster-ca")
	c := newCluster(t, 3, withTLS(t, ca))
	l := c.waitLeader()
	var follower *tnode
	for _, n := range c.nodes {
		if n != l {
			follower = n
			break
		}
	}
	propose(t, l, "on-leader")
	propose(t, follower, "forwarded")
	waitConverged(t, 2, c.nodes...)
	if f := follower.Stats().Forwarded; f == 0 {
		t.Errorf("follower forwarded %d proposals, want its proposal forwarded over TLS", f)
	}
	for _, n := range c.nodes {
		if got := n.Stats().TLSFailed; got != 0 {
			t.Errorf("%s: %d failed TLS handshakes among members of one CA", n.cfg.NodeName, got)
		}
	}
}

// A node whose certificate comes from another CA joins gossip and is added
// to the raft configuration by the leader, but every raft connection
// between it and the members fails the handshake: it never receives a log
// entry while the cluster keeps committing.
func TestTLSForeignCANeverCatchesUp(t *testing.T) {
	ca := newTestCA(t, "cluster-ca")
	c := newCluster(t, 2, withTLS(t, ca))
	l := c.waitLeader()
	propose(t, l, "before")

	other := newTestCA(t, "other-ca")
	foreign := c.add("intruder", 0, withTLS(t, other))
	waitFor(t, 20*time.Second, "the leader to add the intruder to raft", func() error {
		st, err := l.Raft()
		if err != nil {
			return err
		}
		if suffrageOf(st, "intruder") == "" {
			return fmt.Errorf("peers %+v", st.Peers)
		}
		return nil
	})
	// The leader keeps trying to replicate to it; each attempt is refused.
	waitFor(t, 20*time.Second, "refused handshakes on the intruder's raft port", func() error {
		if got := foreign.Stats().TLSFailed; got < 3 {
			return fmt.Errorf("%d refused handshakes", got)
		}
		return nil
	})
	propose(t, l, "after")
	waitConverged(t, 2, c.nodes[0], c.nodes[1])
	if got := foreign.app.state().N; got != 0 {
		t.Errorf("intruder applied %d commands", got)
	}
	if st, err := foreign.Raft(); err != nil || st.LastIndex != 0 || st.LeaderID != "" {
		t.Errorf("intruder raft status %+v (%v), want an empty log and no leader", st, err)
	}
}

// plainLayer is a raft stream layer that dials the raft port without TLS.
type plainLayer struct{ net.Listener }

func (l plainLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return dialMux(nil, string(addr), muxRaft, timeout, nil)
}

// A TLS node serves no raft RPC and no forwarding to a plain-TCP dialer nor
// to a client whose certificate comes from another CA; the same RPC with a
// certificate from its CA is answered.
func TestTLSPlainDialerGetsNoService(t *testing.T) {
	ca := newTestCA(t, "cluster-ca")
	cfg := testConfig(t, "solo", 1)
	cfg.TLS = ca.issue(t, "solo")
	n := startNode(t, cfg)
	waitSoloLeader(t, n)
	target := raft.ServerAddress(n.RaftAddr())
	vote := func(trans raft.Transport) error {
		var resp raft.RequestVoteResponse
		return trans.RequestVote("solo", target, &raft.RequestVoteRequest{
			RPCHeader: raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("probe"), Addr: []byte(trans.LocalAddr())}, Term: 1}, &resp)
	}
	newTrans := func(layer raft.StreamLayer) *raft.NetworkTransport {
		tr := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: layer, MaxPool: 1, Timeout: 2 * time.Second})
		t.Cleanup(func() { tr.Close() })
		return tr
	}

	ln, err := net.Listen("tcp", testIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	if err := vote(newTrans(plainLayer{ln})); err == nil {
		t.Fatal("a plain-TCP raft RPC to a TLS node was answered")
	}
	waitFor(t, 5*time.Second, "the refused handshake counted", func() error {
		if n.Stats().TLSFailed == 0 {
			return fmt.Errorf("no refused handshake")
		}
		return nil
	})
	fc := newFwdClient(nil, time.Second, nil, &counters{})
	t.Cleanup(fc.close)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := fc.call(ctx, n.RaftAddr(), fwdRequest{Kind: reqStatus}); err == nil {
		t.Fatalf("a plain-TCP forwarding request to a TLS node was answered: %+v", r)
	}

	// A client that trusts the node's CA but holds a certificate from
	// another one: the node must refuse its client certificate.
	stranger := newTestCA(t, "other-ca").issue(t, "stranger")
	stranger.CA = ca.pool
	fs := newFwdClient(nil, time.Second, (&Node{cfg: Config{TLS: stranger}}).clientTLS(), &counters{})
	t.Cleanup(fs.close)
	if r, err := fs.call(ctx, n.RaftAddr(), fwdRequest{Kind: reqStatus}); err == nil {
		t.Fatalf("a forwarding request with a client certificate from another CA was answered: %+v", r)
	}

	ln2, err := net.Listen("tcp", testIP()+":0")
	if err != nil {
		t.Fatal(err)
	}
	m := newMux(ln2, ln2.Addr(), time.Second, nil, (&Node{cfg: Config{TLS: ca.issue(t, "probe")}}).clientTLS(), &counters{}, slog.New(slog.DiscardHandler))
	t.Cleanup(m.close)
	if err := vote(newTrans(raftLayer{m})); err != nil {
		t.Fatalf("the same RPC with a certificate from the node's CA: %v", err)
	}
}
