package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// runCerts writes the PEM files for cluster.raft.tls: a cluster CA (made
// once, reused when DIR already holds ca.crt and ca.key, so nodes can be
// added later) and one certificate per node name, valid for server and
// client authentication as the raft port needs. Existing node files are
// never overwritten.
func runCerts(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", ".", "directory for ca.crt, ca.key, NAME.crt and NAME.key")
	days := fs.Int("days", 825, "validity of new certificates in days")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() == 0 || *days < 1 {
		return fmt.Errorf("%w: certs [-dir DIR] [-days N] NODE-NAME...", errUsage)
	}
	files, err := writeRaftCerts(*dir, time.Duration(*days)*24*time.Hour, time.Now(), fs.Args()...)
	for _, f := range files {
		fmt.Fprintln(stdout, "wrote", f)
	}
	return err
}

// writeRaftCerts makes or loads dir/ca.{crt,key} and writes NAME.{crt,key}
// for each name, valid from now for validity; it returns the files it wrote.
func writeRaftCerts(dir string, validity time.Duration, now time.Time, names ...string) ([]string, error) {
	var wrote []string
	for _, name := range names {
		if name == "" || filepath.Base(name) != name || name == "ca" {
			return nil, fmt.Errorf("%w: node name %q is not a plain file name", errUsage, name)
		}
		for _, ext := range []string{".crt", ".key"} {
			if _, err := os.Stat(filepath.Join(dir, name+ext)); err == nil {
				return nil, fmt.Errorf("%s: already exists; not overwritten", filepath.Join(dir, name+ext))
			}
		}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	ca, caKey, made, err := loadOrMakeCA(dir, validity, now)
	if err != nil {
		return nil, err
	}
	if made {
		wrote = append(wrote, filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key"))
	}
	for _, name := range names {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
		files, err := writeCert(dir, name, tmpl, ca, caKey)
		wrote = append(wrote, files...)
		if err != nil {
			return wrote, err
		}
	}
	return wrote, nil
}

// loadOrMakeCA returns the CA in dir, creating it when neither file exists.
func loadOrMakeCA(dir string, validity time.Duration, now time.Time) (*x509.Certificate, crypto.Signer, bool, error) {
	crtFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	crtPEM, errC := os.ReadFile(crtFile)
	keyPEM, errK := os.ReadFile(keyFile)
	if errors.Is(errC, fs.ErrNotExist) && errors.Is(errK, fs.ErrNotExist) {
		tmpl := &x509.Certificate{Subject: pkix.Name{CommonName: "sipdispatch cluster CA"},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(validity),
			IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
		if _, err := writeCert(dir, "ca", tmpl, nil, nil); err != nil {
			return nil, nil, false, err
		}
		ca, key, _, err := loadOrMakeCA(dir, validity, now)
		return ca, key, true, err
	}
	if errC != nil || errK != nil {
		return nil, nil, false, fmt.Errorf("CA in %s: need both ca.crt and ca.key: %w", dir, errors.Join(errC, errK))
	}
	cb, _ := pem.Decode(crtPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, nil, false, fmt.Errorf("CA in %s: ca.crt or ca.key is not PEM", dir)
	}
	ca, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s: %w", crtFile, err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, false, fmt.Errorf("%s: %w", keyFile, err)
	}
	if !ca.IsCA {
		return nil, nil, false, fmt.Errorf("%s: not a CA certificate", crtFile)
	}
	return ca, key, false, nil
}

// writeCert signs tmpl for a new P-256 key with parent/parentKey (self-signed
// when parent is nil) and writes dir/name.crt and dir/name.key (0600).
func writeCert(dir, name string, tmpl, parent *x509.Certificate, parentKey crypto.Signer) ([]string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: %w", name, err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	var wrote []string
	for _, f := range []struct {
		ext, typ string
		der      []byte
	}{{".crt", "CERTIFICATE", der}, {".key", "EC PRIVATE KEY", kder}} {
		p := filepath.Join(dir, name+f.ext)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return wrote, err
		}
		wrote = append(wrote, p)
	}
	return wrote, nil
}
