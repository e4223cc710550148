package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
)

// stream serves GET /v1/inbox/:handle/stream as Server-Sent Events. The core's
// Follow does the reading (backlog, ready, live, each message once and in
// order); this handler authenticates, then writes what Follow emits, one
// flushed event at a time, with pings in between. The stream lives as long
// as the request, and ends early on shutdown or when the client cannot take
// an event within StreamWriteTimeout: the client reconnects with
// Last-Event-ID and loses nothing.
//
// Nothing is queued here: each event goes straight to the connection, so a
// stream's memory is the connection's own buffers whatever the backlog.
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
	if _, err := s.authorizeOwner(req.Context(), creds, identity.StreamString(handle, creds.TS), handle); err != nil {
		return err
	}
	release, err := s.acquireStream(handle)
	if err != nil {
		return err
	}
	defer release()

	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()

	w := &eventWriter{res: c.Response(), rc: http.NewResponseController(c.Response()), timeout: s.cfg.StreamWriteTimeout}
	// The server's read deadline would otherwise expire mid-stream and cancel
	// the request's context.
	_ = w.rc.SetReadDeadline(time.Time{})
	if err := w.start(); err != nil {
		return nil // the client is gone before the first byte
	}

	// Pings come from a timer, not a goroutine of their own: an idle
	// stream costs no more than its handler. Each frame pushes the next
	// ping back, so pings fill only the silences.
	w.pingEvery, w.onPingFail = s.cfg.PingInterval, cancel
	w.pinger = time.AfterFunc(s.cfg.PingInterval, w.ping)
	err = s.svc.Follow(ctx, handle, cursor, w.event)
	cancel()
	w.stopPings()

	var werr *writeError
	switch {
	case errors.As(err, &werr):
		s.log.Debug("stream ended: write failed", "handle", handle, "err", werr.err)
		return nil
	case err != nil && ctx.Err() != nil:
		return nil // ended by the client or by shutdown
	default:
		return err // committed: the error handler logs it and writes nothing
	}
}

// streamCredentials takes ?auth=<ts>:<sig>, signed by the path's handle,
// or else the Authorization header. With neither, the original server's
// answer stands: 400 invalid_request.
func streamCredentials(r *http.Request, handle string) (identity.Credentials, error) {
	if v := r.URL.Query().Get("auth"); v != "" {
		creds, err := identity.ParseStreamAuth(handle, v)
		if err != nil {
			return identity.Credentials{}, chat.Errorf(chat.CodeInvalidRequest, "auth: %v", err)
		}
		return creds, nil
	}
	if r.Header.Get(echo.HeaderAuthorization) == "" {
		return identity.Credentials{}, chat.Errorf(chat.CodeInvalidRequest, "a stream needs ?auth=<ts>:<sig> or an Authorization header")
	}
	return headerCredentials(r)
}

// streamCursor is Last-Event-ID if present, else since, else "now".
func streamCursor(r *http.Request) (chat.Cursor, error) {
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := queryInt(v, "Last-Event-ID", 0)
		return chat.Cursor{Seq: n}, err
	}
	if v := r.URL.Query().Get("since"); v != "" {
		n, err := queryInt(v, "since", 0)
		return chat.Cursor{Seq: n}, err
	}
	return chat.Cursor{Now: true}, nil
}

// eventWriter writes SSE frames, each flushed under its own write deadline.
// Follow's events and the ping timer share it, hence the mutex.
type eventWriter struct {
	mu      sync.Mutex
	res     *echo.Response
	rc      *http.ResponseController
	timeout time.Duration

	pinger     *time.Timer   // nil until pings start
	pingEvery  time.Duration // the longest silence
	onPingFail func()        // ends the stream when a ping cannot be written
	stopped    bool          // no more pings (under mu)
}

// writeError marks a failed write to the client, which ends a stream quietly.
type writeError struct{ err error }

func (e *writeError) Error() string { return "write event: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (w *eventWriter) start() error {
	h := w.res.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
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

// event writes one chat.Event. ready and reset carry no id line, so they
// never move the client's Last-Event-ID.
func (w *eventWriter) event(ev chat.Event) error {
	switch ev.Kind {
	case chat.EventMessage:
		data, err := marshalJSON(ev.Message)
		if err != nil {
			return fmt.Errorf("encode message %d: %w", ev.Message.Seq, err)
		}
		return w.write("id: "+strconv.FormatInt(ev.Message.Seq, 10)+"\nevent: message\ndata: ", data, "\n\n")
	case chat.EventReady:
		return w.write(`event: ready`+"\n"+`data: {"latest":`+strconv.FormatInt(ev.Latest, 10)+"}\n\n", nil, "")
	case chat.EventReset:
		return w.write(`event: reset`+"\n"+`data: {"oldest":`+strconv.FormatInt(ev.Oldest, 10)+"}\n\n", nil, "")
	default:
		return fmt.Errorf("unknown stream event kind %d", ev.Kind)
	}
}

// ping is the ping timer's function: it writes a comment frame, or ends
// the stream when the client cannot take it.
func (w *eventWriter) ping() {
	if err := w.write(": ping\n\n", nil, ""); err != nil {
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
}

// write writes head, data and tail as one frame and flushes it. The pieces
// go straight to the connection's buffer; nothing is kept between frames.
func (w *eventWriter) write(head string, data []byte, tail string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return &writeError{errors.New("stream ended")}
	}
	if w.pinger != nil {
		w.pinger.Reset(w.pingEvery)
	}
	if err := w.rc.SetWriteDeadline(time.Now().Add(w.timeout)); err != nil {
		return &writeError{err}
	}
	if _, err := w.res.Write([]byte(head)); err != nil {
		return &writeError{err}
	}
	if len(data) > 0 {
		if _, err := w.res.Write(data); err != nil {
			return &writeError{err}
		}
	}
	if tail != "" {
		if _, err := w.res.Write([]byte(tail)); err != nil {
			return &writeError{err}
		}
	}
	if err := w.rc.Flush(); err != nil {
		return &writeError{err}
	}
	return nil
}
