package httpapi

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

// eventWriter writes SSE frames, a burst at a time: to a detached stream's
// connection in one write, or else to the response, flushed. Follow's
// events and the server's ping wheel share it, hence the mutex.
//
// A detached stream's write is first tried without waiting (writeNow): a
// reader that keeps up has room in its socket, and then the write needs no
// deadline, which would cost a runtime timer per write. Only a write the
// socket cannot take at once waits, under the write deadline.
type eventWriter struct {
	mu      sync.Mutex
	conn    net.Conn        // a detached stream's; nil in the handler
	raw     syscall.RawConn // conn's, when it can be written without waiting; else nil
	res     *echo.Response
	rc      *http.ResponseController
	timeout time.Duration

	frames  *sync.Pool // of *[]byte, the server's
	pending *[]byte    // frames held back until the burst ends (under mu)
	heldDue time.Time  // when the frames held back must be written by, if set (under mu)
	// missedDue says a write failed at heldDue: the reader is too slow
	// (under mu; read once stopPings has returned).
	missedDue bool

	// The ping wheel's (see pings.go): lastTick is the wheel's tick at the
	// last write; slot and pos are where the wheel files it (under its mu).
	wheel      *pingWheel
	lastTick   atomic.Int64
	slot, pos  int
	onPingFail func() // ends the stream when a ping cannot be written
	stopped    bool   // no more pings (under mu)

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

// pingFrame is the comment that fills a silence.
const pingFrame = ": ping\n\n"

// pingDue is the ping wheel's: it writes a ping (after whatever is held
// back) if the connection takes it at once, and otherwise leaves the
// rest to a goroutine of its own that waits for the socket as any write
// does, so that the wheel never waits on a client. A stream whose writer is
// busy needs no ping: the write in progress ends the silence, or fails and
// ends the stream.
func (w *eventWriter) pingDue() {
	if !w.mu.TryLock() {
		return
	}
	if w.stopped || w.ended.Load() {
		w.mu.Unlock()
		return
	}
	w.hold(pingFrame, "", "", nil, "")
	if w.writeNow() {
		w.release()
		w.mu.Unlock()
		return
	}
	w.mu.Unlock()
	go w.ping()
}

// ping writes what is held back (a ping that could not be written at
// once), or ends the stream when the client cannot take it.
func (w *eventWriter) ping() {
	if err := w.write(false, "", "", "", nil, ""); err != nil {
		w.onPingFail()
	}
}

// stopPings takes the stream out of the ping wheel and waits out a write
// in progress.
func (w *eventWriter) stopPings() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	if w.wheel != nil {
		w.wheel.remove(w)
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
	buf := w.hold(a, b, c, data, d)
	if hold && len(*buf) < maxHeld {
		return nil
	}
	defer w.release()
	if len(*buf) == 0 || w.writeNow() {
		return nil
	}
	w.writing.Store(true)
	defer w.writing.Store(false)
	if w.ended.Load() { // abort came between the check and writing: it saw no write
		return &writeError{errors.New("stream ended")}
	}
	defer w.wrote()
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
		if w.raw != nil {
			// Written: the next writes try without waiting, and a deadline
			// left to expire would fail them (abort's is seen in ended).
			if err := w.conn.SetWriteDeadline(time.Time{}); err != nil {
				return &writeError{err}
			}
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

// hold appends a frame (the pieces in order) to the frames held back, taking
// a buffer from the pool if none is held (under mu).
func (w *eventWriter) hold(a, b, c string, data []byte, d string) *[]byte {
	buf := w.pending
	if buf == nil {
		buf, _ = w.frames.Get().(*[]byte)
		if buf == nil {
			buf = new([]byte)
		}
	}
	*buf = append(append(append(append(append(*buf, a...), b...), c...), data...), d...)
	w.pending = buf
	return buf
}

// writeNow writes the frames held back if the connection takes them at
// once, without waiting and so without a write deadline, and reports
// whether it wrote them all; what it could not write stays held back, in
// order (under mu). Frames past their drain deadline are not tried: the
// waiting write fails them.
func (w *eventWriter) writeNow() bool {
	if w.raw == nil || w.pending == nil || w.ended.Load() {
		return false
	}
	if !w.heldDue.IsZero() && !time.Now().Before(w.heldDue) {
		return false
	}
	buf := w.pending
	n, all := writeNonBlocking(w.raw, *buf)
	if n > 0 {
		w.wrote()
	}
	if !all {
		*buf = (*buf)[:copy(*buf, (*buf)[n:])]
	}
	return all
}

// wrote tells the ping wheel that the stream just wrote.
func (w *eventWriter) wrote() {
	if w.wheel != nil {
		w.lastTick.Store(w.wheel.now.Load())
	}
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
