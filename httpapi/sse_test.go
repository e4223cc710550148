package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// sseEvent is one parsed SSE frame; a comment-only frame has comment set.
type sseEvent struct {
	id      string
	hasID   bool
	event   string
	data    string
	comment string
}

type sseStream struct {
	t   *testing.T
	res *http.Response
	r   *bufio.Reader
}

// streamTimeout bounds every stream a test opens, so a stuck read ends.
const streamTimeout = 20 * time.Second

// openStream opens path and returns the response; the caller checks status.
func (e *env) openStream(path string, header http.Header) *sseStream {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), streamTimeout)
	e.t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("GET %s: %v", path, err)
	}
	e.t.Cleanup(func() { res.Body.Close() })
	return &sseStream{t: e.t, res: res, r: bufio.NewReader(res.Body)}
}

// streamPath is bob's stream URL with ?auth= signed by u, plus extra query.
func streamPath(u user, handle, extra string) string {
	ts := now()
	p := fmt.Sprintf("/v1/inbox/%s/stream?auth=%d:%s", handle, ts, identity.Sign(u.priv, identity.StreamString(handle, ts)))
	if extra != "" {
		p += "&" + extra
	}
	return p
}

// next reads one frame.
func (s *sseStream) next() sseEvent {
	s.t.Helper()
	var ev sseEvent
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			s.t.Fatalf("read stream: %v (frame so far %+v)", err, ev)
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			return ev
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.comment = value
		case "id":
			ev.id, ev.hasID = value, true
		case "event":
			ev.event = value
		case "data":
			ev.data = value
		default:
			s.t.Fatalf("unexpected stream line %q", line)
		}
	}
}

// nextEvent reads frames, skipping pings, until an event.
func (s *sseStream) nextEvent() sseEvent {
	s.t.Helper()
	for {
		if ev := s.next(); ev.comment == "" {
			return ev
		}
	}
}

func (s *sseStream) wantMessage(seq int64) store.Message {
	s.t.Helper()
	ev := s.nextEvent()
	if ev.event != "message" || ev.id != itoa(seq) {
		s.t.Fatalf("got %+v, want message %d", ev, seq)
	}
	var m store.Message
	if err := json.Unmarshal([]byte(ev.data), &m); err != nil || m.Seq != seq {
		s.t.Fatalf("message data %q (err %v), want seq %d", ev.data, err, seq)
	}
	return m
}

// wantReady reads a ready event for latest. It must carry id: <latest>, so
// that a client which saw no message resumes from it (PROTOCOL.md).
func (s *sseStream) wantReady(latest int64) {
	s.t.Helper()
	ev := s.nextEvent()
	data := `{"latest":` + itoa(latest) + `}`
	if ev.event != "ready" || ev.data != data || !ev.hasID || ev.id != itoa(latest) {
		s.t.Fatalf("got %+v, want event ready data %s and id %d", ev, data, latest)
	}
}

// wantReset reads a reset event for oldest, which carries no id line.
func (s *sseStream) wantReset(oldest int64) {
	s.t.Helper()
	ev := s.nextEvent()
	data := `{"oldest":` + itoa(oldest) + `}`
	if ev.event != "reset" || ev.data != data || ev.hasID {
		s.t.Fatalf("got %+v, want event reset data %s and no id", ev, data)
	}
}

// wantEnd reads until the server ends the stream.
func (s *sseStream) wantEnd() {
	s.t.Helper()
	_, err := io.Copy(io.Discard, s.r)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		s.t.Fatalf("stream did not end cleanly: %v", err)
	}
}

func TestStreamBacklogThenReady(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		e := newEnv(t, open(t))
		alice, bob := e.aliceAndBob()
		envelope := `{"ct":"<&>","n":1.0}`
		e.mustSend(alice, "bob", "m1", envelope)
		e.mustSend(alice, "bob", "m2", `2`)

		s := e.openStream(streamPath(bob, "bob", "since=0"), nil)
		if s.res.StatusCode != http.StatusOK {
			t.Fatalf("status %d", s.res.StatusCode)
		}
		for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
			if got := s.res.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
		m := s.wantMessage(1)
		if string(m.Envelope) != envelope || m.From != "alice" || m.To != "bob" || m.ID != "m1" {
			t.Fatalf("first message %+v", m)
		}
		s.wantMessage(2)
		s.wantReady(2)

		t.Run("Last-Event-ID wins over since", func(t *testing.T) {
			s := e.openStream(streamPath(bob, "bob", "since=0"), http.Header{"Last-Event-Id": {"1"}})
			s.wantMessage(2)
			s.wantReady(2)
		})
		t.Run("no cursor means now", func(t *testing.T) {
			s := e.openStream(streamPath(bob, "bob", ""), nil)
			s.wantReady(2)
		})
		t.Run("cursor past the end", func(t *testing.T) {
			// Read as the latest stored seq, so later messages are not skipped
			// (TestStreamResetAfterDeletion sends one).
			s := e.openStream(streamPath(bob, "bob", "since=7"), nil)
			s.wantReady(2)
		})
		t.Run("auth with an escaped colon", func(t *testing.T) {
			s := e.openStream(strings.Replace(streamPath(bob, "bob", "since=1"), ":", "%3A", 1), nil)
			s.wantMessage(2)
		})
		t.Run("Authorization header", func(t *testing.T) {
			ts := now()
			s := e.openStream("/v1/inbox/bob/stream?since=1", http.Header{"Authorization": {bob.authHeader(identity.StreamString("bob", ts), ts)}})
			s.wantMessage(2)
		})
	})
}

func TestStreamAuth(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice, bob, mallory := newUser(t, "alice"), newUser(t, "bob"), newUser(t, "mallory")
	e.register(alice)
	e.register(bob)

	ts := now()
	sig := func(u user, msg string) string { return identity.Sign(u.priv, msg) }
	tests := []struct {
		name   string
		path   string
		header http.Header
		status int
		code   protocol.Code
	}{
		{"no credentials", "/v1/inbox/bob/stream", nil, http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"malformed auth", "/v1/inbox/bob/stream?auth=bad", nil, http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"malformed header", "/v1/inbox/bob/stream", http.Header{"Authorization": {"Kez bob"}}, http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"bad signature", fmt.Sprintf("/v1/inbox/bob/stream?auth=%d:%s", ts, sig(alice, identity.StreamString("bob", ts))), nil, http.StatusUnauthorized, protocol.CodeBadSignature},
		{"poll signature replayed", fmt.Sprintf("/v1/inbox/bob/stream?auth=%d:%s", ts, sig(bob, identity.PollString("bob", 0, ts))), nil, http.StatusUnauthorized, protocol.CodeBadSignature},
		{"stale timestamp", fmt.Sprintf("/v1/inbox/bob/stream?auth=%d:%s", ts-1000, sig(bob, identity.StreamString("bob", ts-1000))), nil, http.StatusUnauthorized, protocol.CodeStaleTimestamp},
		{"unregistered", fmt.Sprintf("/v1/inbox/mallory/stream?auth=%d:%s", ts, sig(mallory, identity.StreamString("mallory", ts))), nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"another handle via header", "/v1/inbox/bob/stream", http.Header{"Authorization": {alice.authHeader(identity.StreamString("bob", ts), ts)}}, http.StatusForbidden, protocol.CodeForbidden},
		{"bad Last-Event-ID", streamPath(bob, "bob", ""), http.Header{"Last-Event-Id": {"x"}}, http.StatusBadRequest, protocol.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.do(http.MethodGet, tt.path, nil, tt.header).wantError(t, tt.status, tt.code)
		})
	}
}

func TestStreamPings(t *testing.T) {
	// ReadTimeout far below the stream's life: the stream must outlive the
	// server's read deadline.
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.PingInterval = 5 * time.Millisecond
		c.ReadTimeout = 50 * time.Millisecond
	})
	bob := newUser(t, "bob")
	e.register(bob)

	s := e.openStream(streamPath(bob, "bob", ""), nil)
	s.wantReady(0)
	start := time.Now()
	for pings := 0; pings < 5 || time.Since(start) < 4*50*time.Millisecond; {
		ev := s.next()
		if ev.comment != "ping" || ev.event != "" || ev.hasID {
			t.Fatalf("got %+v, want a ping comment", ev)
		}
		pings++
	}
}

func TestStreamLimit(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.MaxStreamsPerHandle = 2 })
	bob := newUser(t, "bob")
	e.register(bob)

	for range 2 {
		e.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)
	}
	e.do(http.MethodGet, streamPath(bob, "bob", ""), nil, nil).wantError(t, http.StatusTooManyRequests, protocol.CodeRateLimited)
}

func TestStreamLimitPerInstance(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.MaxStreams = 2 })
	users := []user{newUser(t, "a1"), newUser(t, "a2"), newUser(t, "a3")}
	for _, u := range users {
		e.register(u)
	}
	for _, u := range users[:2] {
		e.openStream(streamPath(u, u.handle, ""), nil).wantReady(0)
	}
	e.do(http.MethodGet, streamPath(users[2], "a3", ""), nil, nil).wantError(t, http.StatusTooManyRequests, protocol.CodeRateLimited)
}

func TestStreamSlowReaderIsClosed(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.StreamWriteTimeout = 100 * time.Millisecond })
	_, bob := e.aliceAndBob() // alice sends, through the store

	// More backlog than the socket buffers on both sides hold.
	envelope := []byte(`"` + strings.Repeat("x", 60<<10) + `"`)
	for i := range 150 {
		if _, err := e.st.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint("m", i), Envelope: envelope}); err != nil {
			t.Fatal(err)
		}
	}

	// A client that sends the request and then never reads.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		return errors.Join(err, serr)
	}}
	conn, err := d.DialContext(t.Context(), "tcp", e.hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", streamPath(bob, "bob", "since=0"))

	// The status line means the stream is open; after it, read nothing.
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("status line %q, err %v", status, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), streamTimeout)
	defer cancel()
	if err := e.srv.WaitStreams(ctx); err != nil {
		t.Fatalf("the slow reader's stream was not closed: %v", err)
	}
}

// Messages deleted after the client's cursor are announced with a reset
// (no id line) naming the oldest kept message, which follows it.
func TestStreamResetAfterDeletion(t *testing.T) {
	for _, b := range teststore.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			st := b.Open(t)
			e := newEnv(t, st)
			alice, bob := e.aliceAndBob()
			for i := range 4 {
				e.mustSend(alice, "bob", fmt.Sprint("m", i), `{}`)
			}
			st.DeleteSeqs(t, "bob", 1, 2)

			s := e.openStream(streamPath(bob, "bob", ""), http.Header{"Last-Event-Id": {"0"}})
			s.wantReset(3)
			s.wantMessage(3)
			s.wantMessage(4)
			s.wantReady(4)

			t.Run("cursor past the deleted ones", func(t *testing.T) {
				s := e.openStream(streamPath(bob, "bob", ""), http.Header{"Last-Event-Id": {"2"}})
				s.wantMessage(3)
				s.wantMessage(4)
				s.wantReady(4)
			})
			t.Run("cursor past the end", func(t *testing.T) {
				s := e.openStream(streamPath(bob, "bob", ""), http.Header{"Last-Event-Id": {"99"}})
				s.wantReady(4)
				e.mustSend(alice, "bob", "after", `{}`)
				s.wantMessage(5) // not skipped as if the client had seen it
			})
		})
	}
}
