package main

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster.raft.tls files are loaded into the node config; a missing CA or
// a CA file without a certificate is an error that names the key.
func TestClusterNodeConfigRaftTLS(t *testing.T) {
	dir := t.TempDir()
	if _, err := writeRaftCerts(dir, time.Hour, time.Now(), "n1"); err != nil {
		t.Fatal(err)
	}
	cert, key, ca := filepath.Join(dir, "n1.crt"), filepath.Join(dir, "n1.key"), filepath.Join(dir, "ca.crt")
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "n1", dir
	c.Cluster.Enabled = true
	c.Cluster.Gossip = gossipConfig{Bind: "127.0.0.1:7946"}
	c.Cluster.Raft.Bind, c.Cluster.Raft.BootstrapExpect = "127.0.0.1:7947", 1
	c.Cluster.Raft.TLS = tlsConfig{Cert: cert, Key: key, CA: ca}
	got, err := c.clusterNodeConfig()
	if err != nil {
		t.Fatal(err)
	}
	if got.TLS == nil || len(got.TLS.Cert.Certificate) != 1 || got.TLS.CA == nil {
		t.Fatalf("TLS not loaded: %+v", got.TLS)
	}
	notPEM := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(notPEM, []byte("nothing"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		tls  tlsConfig
		want string
	}{
		"no ca":      {tlsConfig{Cert: cert, Key: key}, `cluster.raft.tls.ca: "": cert, key and ca go together`},
		"ca not pem": {tlsConfig{Cert: cert, Key: key, CA: notPEM}, "no PEM certificate"},
		"bad key":    {tlsConfig{Cert: cert, Key: notPEM, CA: ca}, "cluster.raft.tls: cert"},
	} {
		bad := c
		bad.Cluster.Raft.TLS = tc.tls
		if _, err := bad.clusterNodeConfig(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}

// certs makes a CA once and node certificates that chain to it for both
// server and client use; a second run adds a node with the same CA and
// never overwrites a node's files.
func TestCerts(t *testing.T) {
	dir := t.TempDir()
	var out, errb strings.Builder
	if err := runCerts([]string{"-dir", dir, "n1", "n2"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out.String(), "wrote "); n != 6 {
		t.Fatalf("wrote %d files, want ca + 2 nodes × 2:\n%s", n, out.String())
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	out.Reset()
	if err := runCerts([]string{"-dir", dir, "n3"}, &out, &errb); err != nil {
		t.Fatal(err)
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dir, "ca.crt")); string(caAfter) != string(caBefore) {
		t.Fatal("the second run replaced the CA")
	}
	if err := runCerts([]string{"-dir", dir, "n2"}, &out, &errb); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("rerun for n2: %v, want already exists", err)
	}
	for _, bad := range [][]string{{"-dir", dir}, {"-dir", dir, "../x"}, {"-dir", dir, "ca"}, {"-days", "0", "n9"}} {
		if err := runCerts(bad, &out, &errb); err == nil {
			t.Errorf("certs %q: no error", bad)
		}
	}
	for _, n := range []string{"n1", "n2", "n3"} {
		tc, err := loadRaftTLS(tlsConfig{Cert: filepath.Join(dir, n+".crt"), Key: filepath.Join(dir, n+".key"), CA: filepath.Join(dir, "ca.crt")})
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		leaf, err := x509.ParseCertificate(tc.Cert.Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, use := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: tc.CA, KeyUsages: []x509.ExtKeyUsage{use}}); err != nil {
				t.Errorf("%s: does not verify for %v: %v", n, use, err)
			}
		}
		if leaf.Subject.CommonName != n {
			t.Errorf("%s: CN %q", n, leaf.Subject.CommonName)
		}
	}
}
