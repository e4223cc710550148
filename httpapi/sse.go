package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"
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
	release, err := s.acquireStream(c.Request().Context(), handle, clientIP(c))
	if err != nil {
		return err
	}

	// A client's bound on silence (a hung server or proxy sends nothing,
	// not even a ping) follows the interval this stream pings at.
	c.Response().Header().Set(protocol.PingIntervalHeader, strconv.FormatInt(s.cfg.PingInterval.Milliseconds(), 10))
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
	// Pings come from the server's ping wheel (pings.go), not a timer or
	// goroutine of the stream's: an idle stream costs no more than its
	// handler. Every frame counts, so pings fill only the silences.
	w.onPingFail = cancel
	s.pings.add(w)
	// Out of the wheel whatever happens: a panic in Follow must not leave
	// the wheel writing to a response that has ended (stopPings is
	// idempotent; the normal path calls it below, where it matters when).
	defer w.stopPings()
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

// setStreamHeaders sets PROTOCOL.md's stream headers.
func setStreamHeaders(h http.Header) {
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
}
