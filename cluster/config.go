package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Config configures a Node. Start from DefaultConfig (production LAN timing) or
// LocalConfig (loopback tests), set the identity and addresses, then call
// Validate (New does it too).
type Config struct {
	// NodeName is the node's unique, stable name. It is both the memberlist
	// name and the raft server ID, so it must survive restarts. Required.
	NodeName string

	// Standalone runs the node as a one-node cluster without any network:
	// raft talks to itself over an in-process transport, there is no gossip,
	// no raft/forwarding listener and no join. On a data dir without raft
	// state the node bootstraps itself as the single voter; otherwise it
	// resumes from the log and snapshots. Leader work (OnLeadership) runs as
	// in a cluster. The gossip/raft addresses, Join, BootstrapExpect,
	// EncryptKey and TLS must be empty, and the raft timings are fixed short
	// (a lone voter waits for nobody). A data dir that holds the state of
	// another server or of a multi-node cluster is refused at Start.
	Standalone bool

	// DataDir holds raft.db (raft log and stable store, bbolt) and the
	// snapshots/ directory. Required; created if missing.
	DataDir string

	// GossipBind is the host:port memberlist listens on (UDP and TCP). Port 0
	// picks a free port. Required.
	GossipBind string
	// GossipAdvertise is the host:port peers use to reach GossipBind. Empty
	// means the bound address (which must then not be 0.0.0.0/::).
	GossipAdvertise string

	// RaftBind is the host:port of the TCP listener shared by raft and the
	// proposal-forwarding RPC (the first byte of a connection selects the
	// protocol). Port 0 picks a free port. Required.
	RaftBind string
	// RaftAdvertise is the host:port peers dial for raft and forwarding; it is
	// gossiped in node meta. Empty means the bound address.
	RaftAdvertise string

	// Join lists gossip addresses (host:port) of existing members. Empty means
	// start alone and wait to be joined. A failed join is retried every
	// RetryJoinInterval until it succeeds or the node closes.
	Join []string

	// BootstrapExpect is how many nodes form a brand-new cluster: once that
	// many alive members advertise the same value, the lowest-named one
	// bootstraps raft with all of them as voters. It is ignored when the data
	// dir already holds raft state. 0 means never bootstrap (join an existing
	// cluster only); 1 means a one-node cluster.
	BootstrapExpect int

	// EncryptKey is the AES key for gossip (16, 24 or 32 bytes). nil means
	// gossip is unencrypted. Nodes with a different key cannot join. Load it
	// with LoadKeyFile.
	EncryptKey []byte

	// TLS, when set, makes every connection on the raft port mutual TLS
	// (1.3 or later): raft replication and proposal forwarding alike. See
	// TLSConfig. nil means plain TCP.
	TLS *TLSConfig

	// MaxVoters caps the raft voters; further nodes join as non-voters and
	// are promoted when a voter goes away. 0 means 5.
	MaxVoters int

	// DeadNodeReap is how long a failed (not gracefully left) node stays in
	// the raft configuration before the leader removes it, and only if the
	// remaining voters keep a quorum. 0 means 24h.
	DeadNodeReap time.Duration

	// ApplyTimeout bounds a Propose (forwarding, retries and commit) when the
	// caller's context has no earlier deadline. 0 means 5s.
	ApplyTimeout time.Duration

	// RetryJoinInterval is the pause between join attempts. 0 means 5s.
	RetryJoinInterval time.Duration

	// ReconcileInterval is how often the leader compares the gossip members
	// with the raft configuration even without membership events. 0 means 10s.
	ReconcileInterval time.Duration

	// MaxBatch caps the commands in one raft entry (group commit). 0 means 512.
	MaxBatch int
	// MaxBatchBytes caps the summed command bytes of one raft entry. 0 means
	// 1 MiB. A single command larger than this is refused with ErrTooLarge.
	MaxBatchBytes int
	// BatchInflight is how many batch entries may await commit at once; while
	// all slots are busy new proposals queue and form the next, larger batch.
	// 0 means 2.
	BatchInflight int
	// BatchDelay is how long the batcher waits for more proposals after the
	// first one when the pipeline is busy. 0 means no extra wait: batches form
	// only while earlier ones commit, so an idle node proposes immediately.
	BatchDelay time.Duration

	// HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout and CommitTimeout
	// are raft's timings (see hashicorp/raft Config). CommitTimeout also bounds
	// how late a follower learns that a forwarded command committed: an idle
	// leader sends the new commit index after CommitTimeout to 2×CommitTimeout,
	// so it is most of a forwarded write's latency. 0 means 1s, 1s, 500ms and
	// 2ms (raft's own default, 50ms, would add ~50-100ms to every algorithm-10
	// INVITE through a follower; 2ms costs an empty AppendEntries every few ms
	// per follower while idle).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotInterval and SnapshotThreshold: raft checks every
	// SnapshotInterval whether more than SnapshotThreshold entries were
	// appended since the last snapshot. 0 means 120s and 8192.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	// TrailingLogs is how many entries are kept after a snapshot so slow
	// followers can catch up without a snapshot transfer. 0 means 10240.
	TrailingLogs uint64
	// RaftNoSync skips fsync in the raft log store. Only for tests and
	// benchmarks: a crash can lose committed entries. false means fsync.
	RaftNoSync bool

	// ProbeInterval, ProbeTimeout, GossipInterval, SuspicionMult,
	// PushPullInterval, TCPTimeout and DeadNodeReclaimTime are memberlist's
	// failure-detector timings (see memberlist Config). 0 means memberlist's
	// LAN defaults (1s, 500ms, 200ms, 4, 30s, 10s) and 30s for the reclaim
	// time (how soon a dead node may come back under the same name at a new
	// address).
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	GossipInterval      time.Duration
	SuspicionMult       int
	PushPullInterval    time.Duration
	TCPTimeout          time.Duration
	DeadNodeReclaimTime time.Duration

	// MessageQueue is the capacity of the queue between memberlist's receive
	// path and OnMessage handlers; messages beyond it are dropped and counted.
	// 0 means 1024.
	MessageQueue int
}

// TLSConfig is a node's identity and trust for the raft port. Each side
// verifies the other's certificate chain against CA: a server requires a
// client certificate, a client verifies the server's. Host names and IP
// SANs are not checked (raft dials advertised addresses that certificates
// rarely name): holding a certificate from CA is what makes a member, so CA
// should issue certificates to the cluster's nodes only. Cert is presented
// in both roles, so its extended key usage must allow server and client
// authentication (or be absent).
type TLSConfig struct {
	Cert tls.Certificate // this node's certificate chain and private key
	CA   *x509.CertPool  // authorities a peer's certificate must chain to
}

// DefaultConfig returns production LAN settings; the caller fills in the
// identity and addresses.
func DefaultConfig() Config {
	return Config{
		MaxVoters:           5,
		DeadNodeReap:        24 * time.Hour,
		ApplyTimeout:        5 * time.Second,
		RetryJoinInterval:   5 * time.Second,
		ReconcileInterval:   10 * time.Second,
		MaxBatch:            512,
		MaxBatchBytes:       1 << 20,
		BatchInflight:       2,
		HeartbeatTimeout:    time.Second,
		ElectionTimeout:     time.Second,
		LeaderLeaseTimeout:  500 * time.Millisecond,
		CommitTimeout:       2 * time.Millisecond,
		SnapshotInterval:    120 * time.Second,
		SnapshotThreshold:   8192,
		TrailingLogs:        10240,
		ProbeInterval:       time.Second,
		ProbeTimeout:        500 * time.Millisecond,
		GossipInterval:      200 * time.Millisecond,
		SuspicionMult:       4,
		PushPullInterval:    30 * time.Second,
		TCPTimeout:          10 * time.Second,
		DeadNodeReclaimTime: 30 * time.Second,
		MessageQueue:        1024,
	}
}

// LocalConfig returns fast timings for several nodes on loopback in one
// process (tests): elections within a few hundred milliseconds, failures
// detected within about a second. Not for real networks.
func LocalConfig() Config {
	c := DefaultConfig()
	c.ApplyTimeout = 10 * time.Second
	c.RetryJoinInterval = 200 * time.Millisecond
	c.ReconcileInterval = 200 * time.Millisecond
	// Short, but with headroom for -race and a busy 2-core machine: a
	// leader that misses its lease for a moment steps down and fails every
	// in-flight proposal.
	c.HeartbeatTimeout = 500 * time.Millisecond
	c.ElectionTimeout = 500 * time.Millisecond
	c.LeaderLeaseTimeout = 400 * time.Millisecond
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.GossipInterval = 20 * time.Millisecond
	c.SuspicionMult = 3
	c.PushPullInterval = 2 * time.Second
	c.TCPTimeout = time.Second
	c.DeadNodeReclaimTime = time.Second
	return c
}

// withDefaults returns c with every zero field replaced by its default.
func (c Config) withDefaults() Config {
	d := DefaultConfig()
	setDur := func(v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
	}
	setInt := func(v *int, def int) {
		if *v == 0 {
			*v = def
		}
	}
	setInt(&c.MaxVoters, d.MaxVoters)
	setDur(&c.DeadNodeReap, d.DeadNodeReap)
	setDur(&c.ApplyTimeout, d.ApplyTimeout)
	setDur(&c.RetryJoinInterval, d.RetryJoinInterval)
	setDur(&c.ReconcileInterval, d.ReconcileInterval)
	setInt(&c.MaxBatch, d.MaxBatch)
	setInt(&c.MaxBatchBytes, d.MaxBatchBytes)
	setInt(&c.BatchInflight, d.BatchInflight)
	setDur(&c.HeartbeatTimeout, d.HeartbeatTimeout)
	setDur(&c.ElectionTimeout, d.ElectionTimeout)
	setDur(&c.LeaderLeaseTimeout, d.LeaderLeaseTimeout)
	setDur(&c.CommitTimeout, d.CommitTimeout)
	setDur(&c.SnapshotInterval, d.SnapshotInterval)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = d.SnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = d.TrailingLogs
	}
	setDur(&c.ProbeInterval, d.ProbeInterval)
	setDur(&c.ProbeTimeout, d.ProbeTimeout)
	setDur(&c.GossipInterval, d.GossipInterval)
	setInt(&c.SuspicionMult, d.SuspicionMult)
	setDur(&c.PushPullInterval, d.PushPullInterval)
	setDur(&c.TCPTimeout, d.TCPTimeout)
	setDur(&c.DeadNodeReclaimTime, d.DeadNodeReclaimTime)
	setInt(&c.MessageQueue, d.MessageQueue)
	return c
}

// Validate reports every problem with c (after defaults are applied) in one
// error.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.NodeName == "" {
		bad("node name is empty")
	} else if len(c.NodeName) > 128 {
		bad("node name %.20q...: longer than 128 bytes", c.NodeName)
	}
	if c.DataDir == "" {
		bad("data dir is empty")
	}
	checkAddr := func(field, v string, required bool) {
		if v == "" {
			if required {
				bad("%s is empty", field)
			}
			return
		}
		if _, _, err := splitHostPort(v); err != nil {
			bad("%s %q: %w", field, v, err)
		}
	}
	if c.Standalone {
		for _, f := range []struct {
			name string
			set  bool
		}{{"gossip bind", c.GossipBind != ""}, {"gossip advertise", c.GossipAdvertise != ""},
			{"raft bind", c.RaftBind != ""}, {"raft advertise", c.RaftAdvertise != ""}, {"join", len(c.Join) > 0},
			{"bootstrap expect", c.BootstrapExpect != 0}, {"encrypt key", len(c.EncryptKey) > 0}, {"TLS", c.TLS != nil}} {
			if f.set {
				bad("standalone node: %s must be empty", f.name)
			}
		}
	} else {
		checkAddr("gossip bind", c.GossipBind, true)
		checkAddr("gossip advertise", c.GossipAdvertise, false)
		checkAddr("raft bind", c.RaftBind, true)
		checkAddr("raft advertise", c.RaftAdvertise, false)
		if c.RaftAdvertise == "" && isUnspecified(c.RaftBind) {
			bad("raft bind %q is a wildcard address: set raft advertise", c.RaftBind)
		}
		if c.GossipAdvertise == "" && isUnspecified(c.GossipBind) {
			bad("gossip bind %q is a wildcard address: set gossip advertise", c.GossipBind)
		}
	}
	if c.TLS != nil {
		if len(c.TLS.Cert.Certificate) == 0 || c.TLS.Cert.PrivateKey == nil {
			bad("TLS: certificate or private key missing")
		}
		if c.TLS.CA == nil {
			bad("TLS: CA pool missing")
		}
	}
	for _, j := range c.Join {
		if _, _, err := splitHostPort(j); err != nil {
			bad("join address %q: %w", j, err)
		}
	}
	if c.BootstrapExpect < 0 {
		bad("bootstrap expect %d is negative", c.BootstrapExpect)
	}
	switch len(c.EncryptKey) {
	case 0, 16, 24, 32:
	default:
		bad("encrypt key is %d bytes, want 16, 24 or 32", len(c.EncryptKey))
	}
	if c.MaxVoters < 1 {
		bad("max voters %d is below 1", c.MaxVoters)
	}
	if c.BootstrapExpect > c.MaxVoters {
		bad("bootstrap expect %d is above max voters %d", c.BootstrapExpect, c.MaxVoters)
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("leader lease timeout %v is above heartbeat timeout %v", c.LeaderLeaseTimeout, c.HeartbeatTimeout)
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("election timeout %v is below heartbeat timeout %v", c.ElectionTimeout, c.HeartbeatTimeout)
	}
	for name, v := range map[string]int{"max batch": c.MaxBatch, "max batch bytes": c.MaxBatchBytes,
		"batch inflight": c.BatchInflight, "suspicion mult": c.SuspicionMult, "message queue": c.MessageQueue} {
		if v < 0 {
			bad("%s %d is negative", name, v)
		}
	}
	for name, v := range map[string]time.Duration{"dead node reap": c.DeadNodeReap, "apply timeout": c.ApplyTimeout,
		"batch delay": c.BatchDelay, "commit timeout": c.CommitTimeout} {
		if v < 0 {
			bad("%s %v is negative", name, v)
		}
	}
	return errors.Join(errs...)
}

// LoadKeyFile reads a gossip encryption key: the base64 text that
// `consul keygen` prints (surrounding whitespace ignored), decoding to 16, 24
// or 32 bytes.
func LoadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("key file %s: not base64: %w", path, err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("key file %s: key is %d bytes, want 16, 24 or 32", path, len(key))
}

func splitHostPort(v string) (string, int, error) {
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return "", 0, err
	}
	p, err := net.LookupPort("tcp", port)
	if err != nil {
		return "", 0, err
	}
	return host, p, nil
}

func isUnspecified(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}
