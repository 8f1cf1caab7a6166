//go:build !linux

package sip

import "syscall"

// reusePort is a no-op where SO_REUSEPORT is not wired up: stateless mode
// then reads each listen address from one socket.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }

const reusePortSupported = false
