package httpapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
)

// openStreams is how many streams s counts for handle.
func (s *Server) openStreams(handle string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams.byHandle[handle]
}

// waitStreamsDone runs WaitStreams in the background; the channel gets its
// result.
func waitStreamsDone(s *Server) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), streamTimeout)
		defer cancel()
		done <- s.WaitStreams(ctx)
	}()
	return done
}

// TestDetachedStream checks that an HTTP/1.1 stream is taken over from
// net/http (its handler returns), answers with the stream headers and a body
// delimited by the connection's end, stays counted by WaitStreams, and is
// ended by CloseStreams.
func TestDetachedStream(t *testing.T) {
	e := newEnvWithBroker(t, openSQLite(t), startBroker(t), func(c *Config) {
		c.PingInterval = time.Hour // no frames but the ones the test expects
	})
	alice, bob := e.aliceAndBob()
	e.mustSend(alice, "bob", "m1", `{"n":1}`)

	s := e.openStream(streamPath(bob, "bob", "since=0"), nil)
	if s.res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", s.res.StatusCode)
	}
	for k, v := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Kez-Ping-Interval": "3600000"} {
		if got := s.res.Header.Get(k); got != v {
			t.Errorf("%s: %q, want %q", k, got, v)
		}
	}
	// Not chunked, as a response from the handler would be: the stream
	// has left net/http.
	if !s.res.Close || len(s.res.TransferEncoding) != 0 || s.res.ContentLength != -1 {
		t.Fatalf("want a body delimited by the connection's end; got close %v, transfer encoding %v, length %d",
			s.res.Close, s.res.TransferEncoding, s.res.ContentLength)
	}
	s.wantMessage(1)
	s.wantReady(1)

	// Live events reach the detached stream.
	e.mustSend(alice, "bob", "m2", `{"n":2}`)
	s.wantMessage(2)

	if n := e.srv.openStreams("bob"); n != 1 {
		t.Fatalf("%d streams counted for bob, want 1", n)
	}
	short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := e.srv.WaitStreams(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitStreams = %v with a detached stream open, want it to wait", err)
	}

	e.srv.CloseStreams()
	s.wantEnd()
	if err := <-waitStreamsDone(e.srv); err != nil {
		t.Fatalf("WaitStreams: %v", err)
	}
	if n := e.srv.openStreams("bob"); n != 0 {
		t.Fatalf("%d streams counted for bob after CloseStreams, want 0", n)
	}
}

// openRawStream opens u's stream on a raw connection, as a client that
// controls its socket would, and returns it once the stream is ready.
func (e *env) openRawStream(u user) net.Conn {
	e.t.Helper()
	conn, err := net.Dial("tcp", e.hs.Listener.Addr().String())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(streamTimeout)); err != nil {
		e.t.Fatal(err)
	}
	if _, err := conn.Write([]byte("GET " + streamPath(u, u.handle, "") + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		e.t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			e.t.Fatalf("waiting for ready: %v", err)
		}
		if strings.HasPrefix(line, "event: ready") {
			return conn
		}
	}
}

// TestDetachedStreamClientCloses checks that a client that closes its
// connection frees its stream's slot: nothing reads a detached stream, so
// the stream notices on a failed write (a ping, here every few
// milliseconds).
func TestDetachedStreamClientCloses(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.MaxStreamsPerHandle = 1
		c.PingInterval = 5 * time.Millisecond
	})
	bob := newUser(t, "bob")
	e.register(bob)

	conn := e.openRawStream(bob)
	if n := e.srv.openStreams("bob"); n != 1 {
		t.Fatalf("%d streams counted for bob, want 1", n)
	}
	conn.Close()

	if err := <-waitStreamsDone(e.srv); err != nil {
		t.Fatalf("the closed client's stream still holds its slot: %v", err)
	}
	e.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)
}

// TestStreamInHandler checks the path for connections that cannot be taken
// over: over HTTP/2 the stream runs in its handler, with pings past the
// server's ReadTimeout, and ends on CloseStreams.
func TestStreamInHandler(t *testing.T) {
	const readTimeout = 250 * time.Millisecond
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.PingInterval = 5 * time.Millisecond
		// Long enough for a TLS handshake on a loaded machine (at 50 ms
		// the connection was sometimes cut before the request), short
		// enough that the pings below outlive it several times.
		c.ReadTimeout = readTimeout
	})
	bob := newUser(t, "bob")
	e.register(bob)

	hs := httptest.NewUnstartedServer(nil)
	hs.Config = e.srv.HTTPServer("")
	hs.EnableHTTP2 = true
	hs.StartTLS()
	t.Cleanup(hs.Close)
	t.Cleanup(e.srv.CloseStreams)
	client := hs.Client() // speaks HTTP/2 to it

	ctx, cancel := context.WithTimeout(t.Context(), streamTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, hs.URL+streamPath(bob, "bob", ""), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 || res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("got %s %s, Content-Type %q; want HTTP/2 200 text/event-stream", res.Proto, res.Status, res.Header.Get("Content-Type"))
	}
	s := &sseStream{t: t, res: res, r: bufio.NewReader(res.Body)}
	s.wantReady(0)
	start := time.Now()
	for pings := 0; pings < 5 || time.Since(start) < 4*readTimeout; pings++ {
		if ev := s.next(); ev.comment != "ping" {
			t.Fatalf("got %+v, want a ping", ev)
		}
	}
	if n := e.srv.openStreams("bob"); n != 1 {
		t.Fatalf("%d streams counted for bob, want 1", n)
	}
	e.srv.CloseStreams()
	s.wantEnd()
	if err := <-waitStreamsDone(e.srv); err != nil {
		t.Fatalf("WaitStreams: %v", err)
	}
}

// TestStreamCapReapsClosedClients: a client that closed its stream (a page
// reload) does not count against the handle's cap, even before a ping
// would have noticed; live streams still do.
func TestStreamCapReapsClosedClients(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.MaxStreamsPerHandle = 1
		c.PingInterval = time.Hour // only the reaping can free the slot
	})
	bob := newUser(t, "bob")
	e.register(bob)

	openRaw := func() net.Conn { return e.openRawStream(bob) }

	for range 3 { // reload, reload, reload
		openRaw().Close()
	}
	// A client that sent bytes after its request, then closed: the unread
	// bytes must not hide the close.
	chatty := openRaw()
	if _, err := chatty.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	chatty.Close()
	live := openRaw()
	defer live.Close()
	// The live one holds the only slot.
	s := e.openStream(streamPath(bob, "bob", ""), nil)
	if s.res.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a second live stream got %s, want 429", s.res.Status)
	}
}

// TestCloseStreamsUnblocksStalledWriter: a stream whose client stopped
// reading is blocked in a write; CloseStreams must end it at once, not when
// its write deadline (a minute here) runs out.
func TestCloseStreamsUnblocksStalledWriter(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.StreamWriteTimeout = time.Minute })
	alice, bob := e.aliceAndBob()
	big := `"` + strings.Repeat("x", 60<<10) + `"`
	for i := range 150 { // 9 MB of backlog, far more than socket buffers hold
		e.mustSend(alice, "bob", fmt.Sprintf("m%d", i), big)
	}

	// A client with a small receive buffer that reads the head and the
	// start of the first event, then stops reading.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", e.hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET " + streamPath(bob, "bob", "since=0") + " HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(streamTimeout))
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(line, "id: 1") {
			break
		}
	}

	started := time.Now()
	e.srv.CloseStreams()
	if err := <-waitStreamsDone(e.srv); err != nil {
		t.Fatalf("WaitStreams: %v", err)
	}
	// The write deadline is a minute; the abort's grace is 250 ms.
	if waited := time.Since(started); waited > 10*time.Second {
		t.Fatalf("the stalled stream ended after %s: it waited out its write deadline", waited)
	}
}

// TestDetachReportsAFailedHead: when the response head cannot be written,
// detach reports it (and closes the connection) rather than handing on a
// stream nobody can read.
func TestDetachReportsAFailedHead(t *testing.T) {
	s := &Server{cfg: Config{StreamWriteTimeout: -time.Second}} // every write is past its deadline
	detached := make(chan error, 1)
	e := echo.New()
	e.GET("/", func(c echo.Context) error {
		conn, err := s.detach(c)
		if conn != nil {
			conn.Close()
		}
		detached <- err
		return nil
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	if res, err := http.Get(srv.URL); err == nil {
		res.Body.Close()
		t.Fatalf("got a response head: %s", res.Status)
	}
	if err := <-detached; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("detach: %v, want the head write's deadline error", err)
	}
}
