package sip

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several UDP sockets bind one address (SO_REUSEPORT), so
// that stateless mode can read one listen address from several goroutines;
// the kernel spreads datagrams over them by the sender's address, so each
// peer's messages stay in order on one socket.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

// reusePortSupported reports whether reusePort works here.
const reusePortSupported = true
