package httpapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// stream serves GET /v1/inbox/:handle/stream as Server-Sent Events. The core's
// Follow does the reading (backlog, ready, live, each message once and in
// order); this handler authenticates, then writes what Follow emits, one
// event at a time, with pings in between. A stream ends on shutdown, when
// the client goes away, or when the client cannot take an event within
// StreamWriteTimeout: the client reconnects with Last-Event-ID and loses
// nothing.
//
// Nothing is queued here beyond one burst: the events Follow emits before
// it waits (its EventFlush) go to the connection in one write, from a
// buffer that goes back to the server's pool after it, so a stream's memory
// does not grow with the backlog and an idle stream holds no buffer.
func (s *Server) stream(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	req := c.Request()
	creds, err := streamCredentials(req, handle)
	if err != nil {
		return err
	}
	cursor, err := streamCursor(req)
	if err != nil {
		return err
	}
	owner, err := s.authorizeOwner(c, creds, identity.StreamString(handle, creds.TS), handle)
	if err != nil {
		return err
	}
	release, err := s.acquireStream(handle, clientIP(c))
	if err != nil {
		return err
	}

	conn, err := s.detach(c)
	switch {
	case errors.Is(err, errNotDetachable):
		defer release()
		return s.serveInHandler(c, owner, cursor)
	case err != nil:
		release()
		return nil // the client is gone before the first byte
	}
	go s.serveDetached(conn, owner, cursor, release)
	return nil
}

// streamSendBuffer is a detached stream's socket send buffer: room for two
// of the largest frames, and 1 MB/s per stream at a 128 ms round trip.
const streamSendBuffer = 128 << 10

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
	w := &eventWriter{conn: conn, timeout: s.cfg.StreamWriteTimeout, frames: &s.frames}
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

// serveInHandler runs a stream in its handler, on the request's connection.
func (s *Server) serveInHandler(c echo.Context, owner store.Handle, cursor chat.Cursor) error {
	handle := owner.Handle
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()

	w := &eventWriter{res: c.Response(), rc: http.NewResponseController(c.Response()), timeout: s.cfg.StreamWriteTimeout, frames: &s.frames}
	// The server's read deadline would otherwise expire mid-stream and cancel
	// the request's context.
	_ = w.rc.SetReadDeadline(time.Time{})
	if err := w.start(); err != nil {
		return nil // the client is gone before the first byte
	}
	err := s.follow(ctx, cancel, w, owner, cursor)
	var werr *writeError
	if errors.As(err, &werr) {
		s.log.Debug("stream ended: write failed", "handle", handle, "err", werr.err)
		return nil
	}
	return err // committed: the error handler logs it and writes nothing
}

// follow writes Follow's events to w with pings in between, until ctx ends,
// a write fails (which cancels ctx) or Follow fails.
func (s *Server) follow(ctx context.Context, cancel context.CancelFunc, w *eventWriter, owner store.Handle, cursor chat.Cursor) error {
	// Pings come from a timer, not a goroutine of their own: an idle
	// stream costs no more than its handler. Each frame pushes the next
	// ping back, so pings fill only the silences.
	w.pingEvery, w.onPingFail = s.cfg.PingInterval, cancel
	w.mu.Lock()
	w.pinger = time.AfterFunc(s.cfg.PingInterval, w.ping)
	w.mu.Unlock()
	stopAbort := context.AfterFunc(ctx, w.abort)
	err := s.svc.Follow(ctx, owner, cursor, w.event)
	ended := ctx.Err() != nil // by the client, a failed ping or shutdown
	cancel()
	w.stopPings() // no write after it: missedDue is settled
	if w.missedDue {
		s.slowStreams.Add(1)
	}
	stopAbort()
	w.finish()
	var werr *writeError
	if err != nil && ended && !errors.As(err, &werr) {
		return nil
	}
	return err
}

// logStreamEnd logs why a detached stream ended, as handleError would have
// for one in its handler: failures of ours as errors, the rest for debugging.
func (s *Server) logStreamEnd(handle string, err error) {
	var werr *writeError
	switch {
	case err == nil:
	case errors.As(err, &werr):
		s.log.Debug("stream ended: write failed", "handle", handle, "err", werr.err)
	default:
		e := chat.AsError(err)
		if status, ok := statusOf[e.Code]; !ok || status >= 500 {
			s.log.Error("stream failed", "handle", handle, "code", string(e.Code), "err", err)
		} else {
			s.log.Debug("stream ended", "handle", handle, "err", err)
		}
	}
}

// streamCredentials takes ?auth=<ts>:<sig>, signed by the path's handle,
// or else the Authorization header. With neither, the original server's
// answer stands: 400 invalid_request.
func streamCredentials(r *http.Request, handle string) (identity.Credentials, error) {
	if v := r.URL.Query().Get("auth"); v != "" {
		creds, err := identity.ParseStreamAuth(handle, v)
		if err != nil {
			return identity.Credentials{}, chat.Errorf(protocol.CodeInvalidRequest, "auth: %v", err)
		}
		return creds, nil
	}
	if r.Header.Get(echo.HeaderAuthorization) == "" {
		return identity.Credentials{}, chat.Errorf(protocol.CodeInvalidRequest, "a stream needs ?auth=<ts>:<sig> or an Authorization header")
	}
	return headerCredentials(r)
}

// streamCursor is Last-Event-ID if present, else since, else "now".
func streamCursor(r *http.Request) (chat.Cursor, error) {
	if v := r.Header.Get(protocol.LastEventIDHeader); v != "" {
		n, err := queryInt(v, "Last-Event-ID", 0)
		return chat.Cursor{Seq: n}, err
	}
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := queryInt(v, "since", 0)
		return chat.Cursor{Seq: n}, err
	}
	return chat.Cursor{Now: true}, nil
}

// eventWriter writes SSE frames, a burst at a time under one write
// deadline: to a detached stream's connection in one write, or else to the
// response, flushed. Follow's events and the ping timer share it, hence the
// mutex.
type eventWriter struct {
	mu      sync.Mutex
	conn    net.Conn // a detached stream's; nil in the handler
	res     *echo.Response
	rc      *http.ResponseController
	timeout time.Duration

	frames  *sync.Pool // of *[]byte, the server's
	pending *[]byte    // frames held back until the burst ends (under mu)
	heldDue time.Time  // when the frames held back must be written by, if set (under mu)
	// missedDue says a write failed at heldDue: the reader is too slow
	// (under mu; read once stopPings has returned).
	missedDue bool

	pinger     *time.Timer   // nil until pings start
	pingEvery  time.Duration // the longest silence
	onPingFail func()        // ends the stream when a ping cannot be written
	stopped    bool          // no more pings (under mu)

	// A stream that must end (shutdown, reaping) while a write is blocked
	// on a client that stopped reading would otherwise wait out the write
	// deadline: abort moves the deadline to now, and ended keeps later
	// writes from setting a fresh one. abortMu orders abort against the
	// stream's end, after which the connection is not ours to touch.
	ended    atomic.Bool
	writing  atomic.Bool // a frame is being written (under mu)
	abortMu  sync.Mutex
	finished bool
	grace    *time.Timer // pending cut of a write in progress
}

// abortGrace is how long a write in progress at abort may go on before it
// is cut: a healthy client takes a frame in microseconds, and a frame cut
// short resets an HTTP/2 stream instead of ending it cleanly.
const abortGrace = 250 * time.Millisecond

// abort makes the write in progress, and every later one, fail at once.
func (w *eventWriter) abort() {
	w.abortMu.Lock()
	defer w.abortMu.Unlock()
	if w.finished {
		return
	}
	w.ended.Store(true)
	// Only a write in progress needs cutting short, and only one that is
	// stuck on a client that stopped reading; an idle stream just ends.
	if w.writing.Load() {
		w.grace = time.AfterFunc(abortGrace, w.cutStuckWrite)
	}
}

func (w *eventWriter) cutStuckWrite() {
	w.abortMu.Lock()
	defer w.abortMu.Unlock()
	if !w.finished && w.writing.Load() {
		w.expireWrites()
	}
}

// finish marks the stream over: abort no longer touches the connection.
func (w *eventWriter) finish() {
	w.abortMu.Lock()
	w.finished = true
	if w.grace != nil {
		w.grace.Stop()
	}
	w.abortMu.Unlock()
}

func (w *eventWriter) expireWrites() {
	if w.conn != nil {
		_ = w.conn.SetWriteDeadline(time.Now())
	} else {
		_ = w.rc.SetWriteDeadline(time.Now())
	}
}

// writeError marks a failed write to the client, which ends a stream quietly.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write event: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// setStreamHeaders sets PROTOCOL.md's stream headers.
func setStreamHeaders(h http.Header) {
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}

// start writes the response head of a stream in its handler.
func (w *eventWriter) start() error {
	setStreamHeaders(w.res.Header())
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return &writeError{err}
	}
	w.res.WriteHeader(http.StatusOK)
	if err := w.rc.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}

// maxHeld bounds the frames held back for one write: past it they are
// written at once, so a backlog of large envelopes never sits whole in
// memory.
const maxHeld = 32 << 10

// event writes one chat.Event (by its Deadline when it has one): holds its frame back until Follow's
// EventFlush, which writes the burst. ready carries id: <latest>, so that a
// client that has seen no message yet (a browser's EventSource reconnecting
// by itself) resumes from where this stream was live rather than from
// "now"; reset carries no id line.
func (w *eventWriter) event(ev chat.Event) error {
	switch ev.Kind {
	case chat.EventMessage:
		// The JSON was encoded once, by the publisher or when read from
		// the store; it goes out as it is.
		w.due(ev.Deadline)
		return w.write(true, "id: ", strconv.FormatInt(ev.Message.Seq, 10), "\nevent: "+protocol.EventMessage+"\ndata: ", ev.Message.JSON, "\n\n")
	case chat.EventReady:
		latest := strconv.FormatInt(ev.Latest, 10)
		return w.write(true, "id: "+latest+"\nevent: "+protocol.EventReady+"\ndata: {\"latest\":", latest, "}\n\n", nil, "")
	case chat.EventReset:
		w.due(ev.Deadline)
		return w.write(true, "event: "+protocol.EventReset+"\ndata: {\"oldest\":", strconv.FormatInt(ev.Oldest, 10), "}\n\n", nil, "")
	case chat.EventFlush:
		return w.write(false, "", "", "", nil, "")
	default:
		return fmt.Errorf("unknown stream event kind %d", ev.Kind)
	}
}

// ping is the ping timer's function: it writes a comment frame (with
// whatever is held back), or ends the stream when the client cannot take it.
func (w *eventWriter) ping() {
	if err := w.write(false, ": ping\n\n", "", "", nil, ""); err != nil {
		w.onPingFail()
	}
}

// stopPings stops the ping timer and waits out a ping being written.
func (w *eventWriter) stopPings() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.pinger != nil {
		w.pinger.Stop()
	}
	w.release()
}

// due makes the write of the frames held back fail at deadline, when that
// is set and earlier than the write timeout: a reader that cannot take them
// by then is too slow, and its stream ends (the client resumes).
func (w *eventWriter) due(deadline time.Time) {
	w.mu.Lock()
	if !deadline.IsZero() && (w.heldDue.IsZero() || deadline.Before(w.heldDue)) {
		w.heldDue = deadline
	}
	w.mu.Unlock()
}

// write appends a frame (the pieces in order) to the frames held back and,
// unless hold is set and they are still small, writes them all in one
// write and flushes. The buffer goes back to the pool after each write.
func (w *eventWriter) write(hold bool, a, b, c string, data []byte, d string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped || w.ended.Load() {
		return &writeError{errors.New("stream ended")}
	}
	buf := w.pending
	if buf == nil {
		buf, _ = w.frames.Get().(*[]byte)
		if buf == nil {
			buf = new([]byte)
		}
	}
	*buf = append(append(append(append(append(*buf, a...), b...), c...), data...), d...)
	w.pending = buf
	if hold && len(*buf) < maxHeld {
		return nil
	}
	defer w.release()
	if len(*buf) == 0 {
		return nil
	}
	w.writing.Store(true)
	defer w.writing.Store(false)
	if w.ended.Load() { // abort came between the check and writing: it saw no write
		return &writeError{errors.New("stream ended")}
	}
	if w.pinger != nil {
		w.pinger.Reset(w.pingEvery)
	}
	by := time.Now().Add(w.timeout)
	due := !w.heldDue.IsZero() && w.heldDue.Before(by)
	if due {
		by = w.heldDue
	}
	if w.conn != nil {
		if err := w.conn.SetWriteDeadline(by); err != nil {
			return &writeError{err}
		}
		if _, err := w.conn.Write(*buf); err != nil {
			w.missedDue = due && errors.Is(err, os.ErrDeadlineExceeded) && !w.ended.Load()
			return &writeError{err}
		}
		return nil
	}
	if err := w.rc.SetWriteDeadline(by); err != nil {
		return &writeError{err}
	}
	if _, err := w.res.Write(*buf); err != nil {
		w.missedDue = due && errors.Is(err, os.ErrDeadlineExceeded) && !w.ended.Load()
		return &writeError{err}
	}
	if err := w.rc.Flush(); err != nil {
		w.missedDue = due && errors.Is(err, os.ErrDeadlineExceeded) && !w.ended.Load()
		return &writeError{err}
	}
	return nil
}

// release gives the held-back buffer to the pool (under mu); a big one is
// dropped, so the pool keeps only ordinary frames' worth.
func (w *eventWriter) release() {
	w.heldDue = time.Time{}
	buf := w.pending
	if buf == nil {
		return
	}
	w.pending = nil
	if cap(*buf) > 2*maxHeld {
		return
	}
	*buf = (*buf)[:0]
	w.frames.Put(buf)
}
