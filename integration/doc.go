// Package integration holds the tests that run sipdispatch with real parts:
// the built binary, SIPp and sipgo agents on loopback, several nodes on
// 127.N.0.x addresses (N per test process). It also enforces the package import rules of
// docs/architecture.md.
package integration
