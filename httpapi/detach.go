package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/store"
)

// errNotDetachable says a stream's connection cannot be taken over.
var errNotDetachable = errors.New("the connection cannot be detached")

// detach takes the connection over from net/http, writes the response head
// itself and returns the connection for the stream to run on.
// It is the idle stream's memory that decides this: a stream served inside
// the handler keeps net/http's connection state (a 4 KiB write buffer, the
// response's 2 KiB chunking buffer, a 4 KiB read buffer, the request and
// Echo's context), its handler goroutine and net/http's background reader
// goroutine for as long as it is open, about 30 KiB; detached, it keeps the
// connection, one goroutine and what Follow holds.
//
// The response is delimited by the connection's end, not chunked, and says
// Connection: close. HTTP/2 and test recorders cannot be hijacked: then the
// error is errNotDetachable, nothing is written and the stream stays in the
// handler. Any other error means the client is gone and the connection
// closed.
func (s *Server) detach(c echo.Context) (net.Conn, error) {
	if c.Request().ProtoMajor != 1 {
		return nil, errNotDetachable
	}
	// The reader returned with the connection holds at most what a client
	// sent after its request, which a stream never reads; dropping it frees
	// net/http's buffers.
	conn, _, err := http.NewResponseController(c.Response()).Hijack()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errNotDetachable, err)
	}
	// A fixed send buffer (not the kernel's autotuned one, which grows to
	// megabytes) keeps what a slow reader leaves queued in the kernel small,
	// and makes it meet its catch-up pages' drain deadline (chat.Event's
	// Deadline) rather than have the kernel take the whole backlog.
	if tc, ok := conn.(interface{ SetWriteBuffer(int) error }); ok {
		_ = tc.SetWriteBuffer(streamSendBuffer)
	}

	h := c.Response().Header() // with whatever middleware set
	setStreamHeaders(h)
	h.Set("Connection", "close")
	h.Set("Date", time.Now().UTC().Format(http.TimeFormat))
	var head bytes.Buffer
	head.WriteString("HTTP/1.1 200 OK\r\n")
	_ = h.Write(&head)
	head.WriteString("\r\n")
	err = conn.SetWriteDeadline(time.Now().Add(s.cfg.StreamWriteTimeout))
	if err == nil {
		_, err = conn.Write(head.Bytes())
	}
	if err == nil {
		// The stream's writes set their own deadline when they must wait
		// (eventWriter.writeNow); a stale one would fail those that need not.
		err = conn.SetWriteDeadline(time.Time{})
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// serveDetached runs a stream that detach took over, on its own goroutine,
// until it ends; then it closes the connection and gives the stream's slot
// back. Its life is the server's, not the request's, whose context ends when
// the handler returns. Nothing reads the connection, so a client that goes
// away is noticed when a write fails: the ping after next at the latest
// (the first write to a closed peer usually succeeds), about two
// PingIntervals; or sooner, when its handle reaches the stream cap and
// acquireStream looks for streams whose clients are gone.
func (s *Server) serveDetached(conn net.Conn, owner store.Handle, cursor chat.Cursor, release func()) {
	handle := owner.Handle
	// Pings are acknowledged by a live client well within two intervals.
	limitUnacked(conn, 2*s.cfg.PingInterval+s.cfg.StreamWriteTimeout)
	ctx, cancel := context.WithCancel(s.closing)
	d := &detachedStream{conn: conn, cancel: cancel, done: make(chan struct{})}
	untrack := s.trackDetached(handle, d)
	defer close(d.done) // last: the slot is back
	defer release()
	defer untrack()
	defer conn.Close()
	defer cancel()
	w := &eventWriter{conn: conn, raw: rawConnOf(conn), timeout: s.cfg.StreamWriteTimeout, frames: &s.frames}
	// No handler recovers a panic here; one must not take the server down
	// or leave the ping timer running.
	defer func() {
		if r := recover(); r != nil {
			w.stopPings()
			s.logStreamEnd(handle, fmt.Errorf("panic: %v", r))
		}
	}()
	s.logStreamEnd(handle, s.follow(ctx, cancel, w, owner, cursor))
}

// rawConnOf returns conn's raw connection when conn is a plain socket
// (a TLS connection is not: its bytes must go through TLS), else nil.
func rawConnOf(conn net.Conn) syscall.RawConn {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}
