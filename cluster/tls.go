package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// serverTLS is the raft listener's TLS config: TLS 1.3, this node's
// certificate, and a client certificate that chains to the CA is required.
// nil without Config.TLS.
func (n *Node) serverTLS() *tls.Config {
	t := n.cfg.TLS
	if t == nil {
		return nil
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    t.CA,
	}
}

// clientTLS is the dialer's TLS config for raft and forwarding: TLS 1.3,
// this node's certificate as client certificate, and the server's chain
// verified against the CA. The host name is not checked (see TLSConfig), so
// Go's built-in verification, which always checks it, is replaced by
// verifyServerChain. nil without Config.TLS.
func (n *Node) clientTLS() *tls.Config {
	t := n.cfg.TLS
	if t == nil {
		return nil
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{t.Cert},
		// Not insecure: VerifyConnection below verifies the chain; only
		// the host name check is left out.
		InsecureSkipVerify: true, //nolint:gosec // chain verified in VerifyConnection
		VerifyConnection:   func(cs tls.ConnectionState) error { return verifyServerChain(cs, t.CA) },
	}
}

// verifyServerChain checks that the server's certificate chains to ca and
// allows server authentication.
func verifyServerChain(cs tls.ConnectionState, ca *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("raft TLS: server sent no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	if err != nil {
		return fmt.Errorf("raft TLS: server certificate: %w", err)
	}
	return nil
}
