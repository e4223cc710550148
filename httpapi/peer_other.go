//go:build !linux

package httpapi

import (
	"net"
	"syscall"
	"time"
)

// peerClosed cannot look at the connection here; closed clients are
// noticed when a write to them fails.
func peerClosed(net.Conn) bool { return false }

// limitUnacked is a no-op here: TCP's own retransmission limits apply.
func limitUnacked(net.Conn, time.Duration) {}

// writeNonBlocking cannot write without waiting here: every write takes
// the waiting path, under its deadline.
func writeNonBlocking(syscall.RawConn, []byte) (n int, all bool) { return 0, false }
