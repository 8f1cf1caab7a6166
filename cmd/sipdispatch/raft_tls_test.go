package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeSelfSigned writes a self-signed ECDSA certificate and its key as PEM
// files in dir and returns their paths.
func writeSelfSigned(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// cluster.raft.tls files are loaded into the node config; a missing CA or
// a CA file without a certificate is an error that names the key.
func TestClusterNodeConfigRaftTLS(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeSelfSigned(t, dir, "node")
	c := defaultConfig()
	c.Node.Name, c.Node.DataDir = "n1", dir
	c.Cluster.Enabled = true
	c.Cluster.Gossip = gossipConfig{Bind: "127.0.0.1:7946"}
	c.Cluster.Raft = raftConfig{Bind: "127.0.0.1:7947", BootstrapExpect: 1, TLS: tlsConfig{Cert: cert, Key: key, CA: cert}}
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
		"no ca":      {tlsConfig{Cert: cert, Key: key}, "cert, key and ca are all required"},
		"ca not pem": {tlsConfig{Cert: cert, Key: key, CA: notPEM}, "no PEM certificate"},
		"bad key":    {tlsConfig{Cert: cert, Key: notPEM, CA: cert}, "cluster.raft.tls: cert"},
	} {
		bad := c
		bad.Cluster.Raft.TLS = tc.tls
		if _, err := bad.clusterNodeConfig(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", name, err, tc.want)
		}
	}
}
