package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// State is the condition of a Stream's connection.
type State int

// The states a Stream reports, in the order they usually come.
const (
	// StateConnecting: the first connection is being opened.
	StateConnecting State = iota
	// StateLive: the backlog has been delivered; messages arrive as they are sent.
	StateLive
	// StateReconnecting: the connection ended or failed; the stream waits
	// and reconnects with Last-Event-ID.
	StateReconnecting
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateLive:
		return "live"
	case StateReconnecting:
		return "reconnecting"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// FromNow as StreamOptions.Since starts the stream with the messages stored
// after it opens, skipping the backlog.
const FromNow int64 = -1

// StreamOptions configure Stream.
type StreamOptions struct {
	// Since is the seq to start after: 0 delivers the whole inbox, FromNow
	// only what arrives once the stream is open.
	Since int64
	// OnState, if set, is called on every state change, with the error
	// that caused a reconnect (nil otherwise): a *ReconnectError saying why
	// and when the next attempt is. Like every error of the client, it
	// carries no credential. It must not block for long.
	OnState func(State, error)
	// Silence is how long a connection may bring nothing, no event and no
	// ping, before the stream takes it for dead (a hung server or proxy)
	// and reconnects, with ErrSilent as the reason; 0 means 2.5 of the
	// ping intervals the server states on the stream (Kez-Ping-Interval:
	// 37.5 s for kezd's default 15 s), or DefaultSilence from a server
	// that states none; a negative value never.
	Silence time.Duration
	// OnGap, if set, is called when the server says (event: reset) that
	// messages after the last one delivered were deleted before the stream
	// could deliver them, by retention or a delete-through; it comes
	// before the message that follows the gap, once per gap. It must not
	// block for long.
	OnGap func(Gap)
}

// DefaultSilence is two of the protocol's longest ping intervals (15 s)
// and a margin: the bound for a server that does not state its interval,
// and for the wait for a response's headers.
const DefaultSilence = 35 * time.Second

// silenceFor is the silence bound for a server's Kez-Ping-Interval value
// (milliseconds; from the network, so bounded): 2.5 intervals, an interval
// taken as at least 100 ms and at most 10 minutes, as the web app does.
// false when the value is not 1 to 9 decimal digits.
func silenceFor(header string) (time.Duration, bool) {
	if len(header) == 0 || len(header) > 9 || strings.Trim(header, "0123456789") != "" {
		return 0, false
	}
	ms, err := strconv.ParseInt(header, 10, 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(min(max(ms, 100), 600_000)) * time.Millisecond * 5 / 2, true
}

// ErrSilent is the reconnect reason of a connection that brought nothing
// for StreamOptions.Silence.
var ErrSilent = errors.New("stream: no event or ping within the silence timeout")

// Stream follows as's inbox over Server-Sent Events and calls deliver for
// each message, exactly once and in seq order, across reconnects: a
// connection that ends or fails is reopened with a freshly signed auth and
// Last-Event-ID, after a backoff with jitter. It returns ctx's error when ctx
// ends, deliver's error if it fails, or an *Error the server gave that no
// retry can fix (a bad signature, an unknown handle, ...).
func (c *Client) Stream(ctx context.Context, as *envelope.Identity, opts StreamOptions, deliver func(Message) error) error {
	st := &streamer{c: c, as: as, deliver: deliver, onState: opts.OnState, onGap: opts.OnGap, last: opts.Since, silence: opts.Silence}
	if st.silence == 0 {
		st.silence, st.followPing = DefaultSilence, true
	}
	return st.run(ctx)
}

type streamer struct {
	c       *Client
	as      *envelope.Identity
	deliver func(Message) error
	onState func(State, error)
	onGap   func(Gap)
	last    int64         // the seq of the last message delivered, or FromNow before the cursor is known
	silence time.Duration // negative: no silence detection
	// followPing: the bound is the server's stated ping interval's, once
	// a response states it.
	followPing bool
}

// silenceReader resets the silence timer on every read that brings bytes.
type silenceReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (s *silenceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.d)
	}
	return n, err
}

func (s *streamer) state(st State, err error) {
	if s.onState != nil {
		s.onState(st, err)
	}
}

// errDeliver wraps the caller's error so it ends the stream rather than
// causing a reconnect.
type errDeliver struct{ err error }

func (e errDeliver) Error() string { return e.err.Error() }

func (s *streamer) run(ctx context.Context) error {
	s.state(StateConnecting, nil)
	failures := 0
	opened := false // a connection was accepted before: its key authenticated
	for {
		live, err := s.connect(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var de errDeliver
		if errors.As(err, &de) {
			return de.err
		}
		if opened && revoked(err) {
			// The key that opened the stream was accepted and now is not:
			// the server ended it for a rotation or a deletion.
			return fmt.Errorf("%w: %w", ErrKeyRevoked, err)
		}
		if err != nil && !retryable(err) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		opened = opened || live
		if err == nil {
			err = io.EOF // the server ended the stream; resume
		}
		err = streamEnd(err)
		if live {
			failures = 0
		}
		delay := s.c.backoff.delay(failures)
		s.state(StateReconnecting, &ReconnectError{Err: err, Delay: delay})
		if err := sleep(ctx, delay); err != nil {
			return err
		}
		failures++
	}
}

// connect runs one connection until it ends. live reports whether it got as
// far as the ready event.
func (s *streamer) connect(ctx context.Context) (live bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A connection silent for too long (no headers, no event, no ping) is
	// cut; the timer runs from before the request, so that a server that
	// hangs before answering is caught too.
	var silent atomic.Bool
	var timer *time.Timer
	silence := s.silence
	if silence > 0 {
		timer = time.AfterFunc(silence, func() { silent.Store(true); cancel() })
		defer timer.Stop()
		defer func() {
			if err != nil && silent.Load() {
				err = ErrSilent
			}
		}()
	}
	ts := s.c.now().Unix()
	q := url.Values{"auth": {strconv.FormatInt(ts, 10) + ":" + identity.Sign(s.as.Signing, identity.StreamString(s.as.Handle, ts))}}
	h := http.Header{"Accept": {"text/event-stream"}}
	if s.last >= 0 {
		// Last-Event-ID takes precedence at the server; since covers a
		// server that only reads the query on the first connection.
		h.Set(protocol.LastEventIDHeader, strconv.FormatInt(s.last, 10))
		q.Set("since", strconv.FormatInt(s.last, 10))
	}
	resp, err := s.c.send(ctx, http.MethodGet, protocol.StreamPath(s.as.Handle), q, nil, "", h)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, readError(resp)
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, fmt.Errorf("stream: content type %q, want text/event-stream", resp.Header.Get("Content-Type"))
	}
	var body io.Reader = resp.Body
	if timer != nil {
		if d, ok := silenceFor(resp.Header.Get(protocol.PingIntervalHeader)); ok && s.followPing {
			silence = d
			timer.Reset(silence)
		}
		body = &silenceReader{r: resp.Body, timer: timer, d: silence}
	}
	r := newEventReader(body)
	for {
		ev, err := r.next()
		if err != nil {
			return live, err
		}
		switch ev.event {
		case protocol.EventMessage, "":
			var m Message
			if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
				return live, fmt.Errorf("stream: message event: %w", err)
			}
			if m.To != s.as.Handle {
				return live, fmt.Errorf("stream: message %d is for %q", m.Seq, m.To)
			}
			if s.last >= 0 && m.Seq <= s.last {
				continue // already delivered on an earlier connection
			}
			// The application's time is not the connection's silence.
			if timer != nil {
				timer.Stop()
			}
			err := s.deliver(m)
			if timer != nil {
				timer.Reset(silence)
			}
			if err != nil {
				return live, errDeliver{err}
			}
			s.last = m.Seq
		case protocol.EventReady:
			var r protocol.Ready
			if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
				return live, fmt.Errorf("stream: ready event: %w", err)
			}
			// The server's cursor is where a reconnect resumes: ahead of
			// ours when starting from now, behind it when ours was beyond
			// anything stored (a restored server), so that what it stores
			// next is not taken for something already delivered. ready
			// carries it as its id (PROTOCOL.md); latest is the same seq,
			// kept for a server that sends no id.
			s.last = r.Latest
			if ev.id != "" {
				id, err := strconv.ParseInt(ev.id, 10, 64)
				if err != nil || id < 0 {
					return live, fmt.Errorf("stream: ready event id %q is not a seq", ev.id)
				}
				s.last = id
			}
			if !live {
				live = true
				s.state(StateLive, nil)
			}
		case protocol.EventReset:
			// Messages before "oldest" were deleted; the server continues
			// from there and seqs only grow. The caller hears of the ones
			// it never got.
			var r protocol.Reset
			if err := json.Unmarshal([]byte(ev.data), &r); err != nil {
				return live, fmt.Errorf("stream: reset event: %w", err)
			}
			if g := gapBefore(s.last, r.Oldest); g != nil && s.onGap != nil {
				if timer != nil {
					timer.Stop()
				}
				s.onGap(*g)
				if timer != nil {
					timer.Reset(silence)
				}
			}
		}
	}
}

// maxEventSize bounds one event's lines: a 64 KiB envelope in a stored
// message with generous room for the rest.
const maxEventSize = 256 << 10

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	id    string
	event string
	data  string
}

// eventReader parses the text/event-stream format (the WHATWG HTML
// standard's "interpreting an event stream").
type eventReader struct {
	sc *bufio.Scanner
}

func newEventReader(r io.Reader) *eventReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxEventSize)
	sc.Split(scanLines)
	return &eventReader{sc: sc}
}

// next returns the next event with data. A stream that ends mid-event
// returns io.ErrUnexpectedEOF; one that ends between events io.EOF.
func (r *eventReader) next() (sseEvent, error) {
	var ev sseEvent
	var data []string
	pending := false
	for r.sc.Scan() {
		line := r.sc.Text()
		if line == "" {
			if len(data) > 0 {
				ev.data = strings.Join(data, "\n")
				return ev, nil
			}
			ev, pending = sseEvent{}, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue // a comment: ": ping"
		}
		pending = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			ev.event = value
		case "data":
			data = append(data, value)
		case "id":
			if !strings.ContainsRune(value, 0) {
				ev.id = value
			}
		}
	}
	if err := r.sc.Err(); err != nil {
		return sseEvent{}, err
	}
	if pending {
		return sseEvent{}, io.ErrUnexpectedEOF
	}
	return sseEvent{}, io.EOF
}

// scanLines splits on "\n", "\r\n" or a lone "\r", as event streams allow.
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	for i, b := range data {
		switch b {
		case '\n':
			return i + 1, data[:i], nil
		case '\r':
			if i+1 < len(data) {
				if data[i+1] == '\n' {
					return i + 2, data[:i], nil
				}
				return i + 1, data[:i], nil
			}
			if atEOF {
				return i + 1, data[:i], nil
			}
			return 0, nil, nil // need the next byte to know whether "\n" follows
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}
