package httpapi

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// peerClosed reports whether the client at the other end of conn has
// closed or reset it, without reading or waiting: the kernel's view of the
// connection is past ESTABLISHED once the client's FIN (or RST) arrived,
// whatever unread bytes it sent before.
func peerClosed(conn net.Conn) bool {
	closed := false
	control(conn, func(fd int) {
		info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return
		}
		switch info.State {
		case unix.BPF_TCP_CLOSE_WAIT, unix.BPF_TCP_CLOSE, unix.BPF_TCP_LAST_ACK:
			closed = true
		}
	})
	return closed
}

// limitUnacked makes the kernel give up on conn when data sent on it stays
// unacknowledged for d: a client that vanished without closing (a phone
// that changed networks) then fails the next write within d, rather than
// holding its stream's slot for the quarter of an hour TCP retransmits.
func limitUnacked(conn net.Conn, d time.Duration) {
	control(conn, func(fd int) {
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(d.Milliseconds()))
	})
}

func control(conn net.Conn, f func(fd int)) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) { f(int(fd)) })
}

// writeNonBlocking writes b to the socket behind raw as far as it takes it
// at once, never waiting for room, and returns how much it wrote and
// whether that was all of b.
func writeNonBlocking(raw syscall.RawConn, b []byte) (n int, all bool) {
	err := raw.Write(func(fd uintptr) bool {
		for n < len(b) {
			m, err := unix.Write(int(fd), b[n:])
			if err == unix.EINTR {
				continue
			}
			if err != nil || m <= 0 {
				break
			}
			n += m
		}
		return true // done, whatever is left: never wait for the socket
	})
	return n, err == nil && n == len(b)
}
