package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config configures a Node. Start from DefaultConfig (production LAN timing) or
// LocalConfig (loopback tests), set the identity and addresses, then call
// Validate (New does it too).
type Config struct {
	// NodeName is the node's unique, stable name. It is both the memberlist
	// name and the raft server ID, so it must survive restarts. Required: one
	// word (no white space).
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

	// DataDir holds raft-log/ (the raft log, cluster/logstore), raft.db
	// (raft's term and vote, bbolt) and the snapshots/ directory. Required;
	// created if missing.
	DataDir string

	// GossipBind is the host:port memberlist listens on (UDP and TCP). Port 0
	// picks a free port. Required; the host too (0.0.0.0 for all).
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

	// Join lists gossip addresses (host[:port], DefaultGossipPort when the
	// port is left out) of existing members. Empty means
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
	// first one when the pipeline is busy or the previous batch formed less
	// than BatchDelay ago (see lingers). 0 means no extra wait: batches form
	// only while earlier ones commit. Either way an idle node proposes
	// immediately. DefaultConfig's 6 ms: each entry costs every voter an
	// fdatasync of its log, which on a virtual disk is a large part of a
	// call's CPU; at 400 calls/s a standalone node then packs a call's three
	// load commands into ~0.35 entries instead of ~0.8 for ~2 ms more median
	// commit wait, and a three-node cluster on one 2-core VM sustains a
	// higher call rate (docs/benchmarks.md).
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
	// RaftNoSync skips fsync in the raft stores. Only for tests and
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
		BatchDelay:          6 * time.Millisecond,
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
	if len(c.Join) > 0 {
		join := make([]string, len(c.Join))
		for i, j := range c.Join {
			if h, port, err := splitHostPort(j); err == nil && port < 0 {
				j = net.JoinHostPort(h, strconv.Itoa(DefaultGossipPort))
			}
			join[i] = j
		}
		c.Join = join
	}
	return c
}

// Limits that Validate applies. Raft itself refuses a CommitTimeout below
// 1ms and a SnapshotInterval below 5ms (at Start, after the data dir is
// opened); the 1s ceiling keeps a forwarded write's wait bounded.
const (
	MinCommitTimeout    = time.Millisecond
	MaxCommitTimeout    = time.Second
	MinSnapshotInterval = 5 * time.Millisecond
)

// DefaultGossipPort is memberlist's port: a Join address without a port gets it.
const DefaultGossipPort = 7946

// Validate reports every problem with c (after defaults are applied) in one
// joined error. Each error reads "KEY: VALUE: reason" and starts with the key
// of sipdispatch's configuration file that sets the field
// (docs/configuration.md: node.name, cluster.gossip.join[1],
// cluster.raft.commit_timeout, ...), as sip.Config.Validate's do, so the
// caller can point at the line; a field that the file does not set is named
// by its Go name (MaxVoters). This is the one place that checks these fields.
func (c Config) Validate() error {
	join := c.Join // as given: withDefaults adds the default port
	c = c.withDefaults()
	var errs []error
	bad := func(key string, v any, why string) { errs = append(errs, fmt.Errorf("%s: %v: %s", key, v, why)) }
	q := strconv.Quote
	if c.NodeName == "" || strings.ContainsAny(c.NodeName, " \t\r\n") {
		// It names the node in gossip, raft and logs.
		bad("node.name", q(c.NodeName), "must be one non-empty word")
	} else if len(c.NodeName) > 128 {
		bad("node.name", fmt.Sprintf("%.20q...", c.NodeName), "longer than 128 bytes")
	}
	if c.DataDir == "" {
		bad("node.data_dir", `""`, "required")
	}
	// addr checks HOST:PORT; port 0 (a free port) only for a bind address.
	addr := func(key, v string, required, bind bool) {
		if v == "" {
			if required {
				bad(key, `""`, "want HOST:PORT")
			}
			return
		}
		_, port, err := splitHostPort(v)
		switch {
		case err != nil:
			bad(key, q(v), err.Error())
		case port < 0:
			bad(key, q(v), "want HOST:PORT")
		case port == 0 && !bind:
			bad(key, q(v), `bad port "0": want 1..65535`)
		}
	}
	if c.Standalone {
		for _, f := range []struct {
			key string
			v   any
			set bool
		}{
			{"cluster.gossip.bind", q(c.GossipBind), c.GossipBind != ""},
			{"cluster.gossip.advertise", q(c.GossipAdvertise), c.GossipAdvertise != ""},
			{"cluster.raft.bind", q(c.RaftBind), c.RaftBind != ""},
			{"cluster.raft.advertise", q(c.RaftAdvertise), c.RaftAdvertise != ""},
			{"cluster.gossip.join", join, len(join) > 0},
			{"cluster.raft.bootstrap_expect", c.BootstrapExpect, c.BootstrapExpect != 0},
			{"cluster.gossip.encrypt_key_file", fmt.Sprintf("%d-byte key", len(c.EncryptKey)), len(c.EncryptKey) > 0},
			{"cluster.raft.tls", "set", c.TLS != nil},
		} {
			if f.set {
				bad(f.key, f.v, "must be empty on a standalone node")
			}
		}
	} else {
		addr("cluster.gossip.bind", c.GossipBind, true, true)
		addr("cluster.gossip.advertise", c.GossipAdvertise, false, false)
		addr("cluster.raft.bind", c.RaftBind, true, true)
		addr("cluster.raft.advertise", c.RaftAdvertise, false, false)
		if c.GossipAdvertise == "" && isUnspecified(c.GossipBind) {
			bad("cluster.gossip.bind", q(c.GossipBind), "a wildcard address: set cluster.gossip.advertise")
		}
		if c.RaftAdvertise == "" && isUnspecified(c.RaftBind) {
			bad("cluster.raft.bind", q(c.RaftBind), "a wildcard address: set cluster.raft.advertise")
		}
		for i, j := range join {
			if _, port, err := splitHostPort(j); err != nil {
				bad(fmt.Sprintf("cluster.gossip.join[%d]", i), q(j), err.Error())
			} else if port == 0 {
				bad(fmt.Sprintf("cluster.gossip.join[%d]", i), q(j), `bad port "0": want 1..65535`)
			}
		}
	}
	if c.TLS != nil {
		if len(c.TLS.Cert.Certificate) == 0 || c.TLS.Cert.PrivateKey == nil {
			bad("cluster.raft.tls.cert", "none", "certificate or private key missing")
		}
		if c.TLS.CA == nil {
			bad("cluster.raft.tls.ca", "none", "CA pool missing")
		}
	}
	if c.BootstrapExpect < 0 {
		bad("cluster.raft.bootstrap_expect", c.BootstrapExpect, "must not be negative")
	} else if c.MaxVoters >= 1 && c.BootstrapExpect > c.MaxVoters {
		bad("cluster.raft.bootstrap_expect", c.BootstrapExpect, fmt.Sprintf("above the %d voters a cluster may have (MaxVoters)", c.MaxVoters))
	}
	switch len(c.EncryptKey) {
	case 0, 16, 24, 32:
	default:
		bad("cluster.gossip.encrypt_key_file", fmt.Sprintf("%d-byte key", len(c.EncryptKey)), "want 16, 24 or 32 bytes")
	}
	if c.MaxVoters < 1 {
		bad("MaxVoters", c.MaxVoters, "must be >= 1")
	}
	if c.CommitTimeout < MinCommitTimeout || c.CommitTimeout > MaxCommitTimeout {
		bad("cluster.raft.commit_timeout", c.CommitTimeout, fmt.Sprintf("must be %v..%v", MinCommitTimeout, MaxCommitTimeout))
	}
	if c.SnapshotInterval < MinSnapshotInterval {
		bad("cluster.raft.snapshot_interval", c.SnapshotInterval, "must be >= "+MinSnapshotInterval.String())
	}
	if c.DeadNodeReap < 0 {
		bad("cluster.dead_node_reap", c.DeadNodeReap, "must be > 0")
	}
	if c.LeaderLeaseTimeout > c.HeartbeatTimeout {
		bad("LeaderLeaseTimeout", c.LeaderLeaseTimeout, fmt.Sprintf("above HeartbeatTimeout %v", c.HeartbeatTimeout))
	}
	if c.ElectionTimeout < c.HeartbeatTimeout {
		bad("ElectionTimeout", c.ElectionTimeout, fmt.Sprintf("below HeartbeatTimeout %v", c.HeartbeatTimeout))
	}
	for _, f := range []struct {
		name string
		v    int
	}{{"MaxBatch", c.MaxBatch}, {"MaxBatchBytes", c.MaxBatchBytes}, {"BatchInflight", c.BatchInflight},
		{"SuspicionMult", c.SuspicionMult}, {"MessageQueue", c.MessageQueue}} {
		if f.v < 0 {
			bad(f.name, f.v, "must not be negative")
		}
	}
	for _, f := range []struct {
		name string
		v    time.Duration
	}{{"ApplyTimeout", c.ApplyTimeout}, {"BatchDelay", c.BatchDelay}} {
		if f.v < 0 {
			bad(f.name, f.v, "must not be negative")
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

// splitHostPort splits HOST[:PORT]; port is -1 when none is given. The
// host is required (0.0.0.0 or [::] for all addresses); an IPv6 address
// goes in brackets, so "::1:7946" is refused rather than guessed at.
func splitHostPort(s string) (host string, port int, err error) {
	host, p := s, ""
	if h, pp, err := net.SplitHostPort(s); err == nil {
		host, p = h, pp
	} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		host = s[1 : len(s)-1]
	}
	if host == "" {
		return "", 0, errors.New("missing host")
	}
	if strings.Contains(host, ":") {
		if _, err := netip.ParseAddr(host); err != nil || !strings.HasPrefix(s, "[") {
			return "", 0, errors.New("bad host (IPv6 addresses go in brackets: [::1]:7946)")
		}
	} else if strings.ContainsAny(host, " /@;[]") {
		return "", 0, fmt.Errorf("bad host %q", host)
	}
	if p == "" {
		return host, -1, nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 0 || n > 65535 {
		return "", 0, fmt.Errorf("bad port %q: want 1..65535", p)
	}
	return host, n, nil
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
