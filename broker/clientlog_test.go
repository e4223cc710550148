package broker

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/nats-io/nats.go"
)

// A flood of connections that send a CONNECT too long, before any login,
// writes one line at info, not one error per connection.
func TestLongConnectsNotLoggedAsErrors(t *testing.T) {
	t.Parallel()
	b, lines := startLogged(t, Config{Listen: "127.0.0.1:-1"})
	addr := strings.TrimPrefix(b.ClientURL(), "nats://")
	connect := []byte(`CONNECT {"user":"` + strings.Repeat("x", 100<<10) + `"}` + "\r\n")
	const n = 20
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(testwait.Timeout))
		c.Write(connect) // the server may close before it has read it all
		io.Copy(io.Discard, c)
		c.Close()
	}
	lines.waitCount(t, "maximum control line exceeded", n)
	log := lines.String()
	if strings.Contains(log, "level=ERROR") {
		t.Fatalf("bad connections logged errors:\n%s", log)
	}
	if got := strings.Count(log, `level=INFO msg="nats client error"`); got != 1 {
		t.Fatalf("%d bad connections logged %d lines at info, want 1:\n%s", n, got, log)
	}
}

// The embedded server's errors about one client connection from the
// network are that client's doing, at info; kezd's own (in-process)
// connections' and the server's are errors.
func TestServerLoggerClientErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, line, level string
	}{
		{"control line", "127.0.0.1:50312 - cid:7 - maximum control line exceeded", "INFO"},
		{"after connect", `127.0.0.1:50312 - cid:7 - "v1.41.1:go:bot" - "APP/UABC" - Publish Violation - Subject "kez.x"`, "INFO"},
		{"IPv6", "[::1]:50312 - cid:7 - Client Error 'unknown protocol operation'", "INFO"},
		{"websocket", "192.0.2.1/127.0.0.1:50312 - wid:8 - maximum control line exceeded", "INFO"},
		{"TLS", "127.0.0.1:50312 - cid:9 - TLS handshake error: EOF", "INFO"},
		{"kezd's own", "pipe - cid:3 - Publish Violation - Subject \"kez.x\"", "ERROR"},
		{"route", "127.0.0.1:6222 - rid:4 - Route Error 'stale connection'", "ERROR"},
		{"server", `Error listening on port: 127.0.0.1:4222, "address already in use"`, "ERROR"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			l := serverLogger{
				log:     slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
				routes:  newRouteWatch(slog.New(slog.DiscardHandler)),
				clients: newClientErrorLog(),
			}
			l.Errorf("%s", c.line)
			if !strings.Contains(buf.String(), "level="+c.level+" ") {
				t.Fatalf("%q logged %q, want level %s", c.line, buf.String(), c.level)
			}
		})
	}
}

// Client errors write one line per interval, with the count of those
// logged at debug only since the last.
func TestClientErrorsSummarised(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	clock := time.Unix(1000, 0)
	r := newClientErrorLogAt(func() time.Time { return clock })
	// 25 s of 100 bad connections a second.
	for i := range 2500 {
		clock = time.Unix(1000, 0).Add(time.Duration(i) * 10 * time.Millisecond)
		r.log(log, "127.0.0.1:50312 - cid:7 - maximum control line exceeded")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("25 s of errors logged %d lines, want 3 (one per 10 s):\n%s", len(lines), buf.String())
	}
	if strings.Contains(lines[0], "errors_before_this_unlogged") {
		t.Errorf("first line %q counts errors before it", lines[0])
	}
	for _, line := range lines[1:] {
		if !strings.Contains(line, "errors_before_this_unlogged=999") {
			t.Errorf("summary %q does not count the 999 errors since the last line", line)
		}
	}
}

// A client's refused login is logged with the user name it chose; a name
// that reads like a route's trouble is still a client's refusal, and does
// not fail readiness (RoutesRefused) or warn of routes.
func TestClientCannotPoseAsRoute(t *testing.T) {
	t.Parallel()
	keys, auth := newCalloutKeys(t)
	b, lines := startLogged(t, Config{Listen: "127.0.0.1:-1", Auth: auth})
	serveCallout(t, b, keys)
	users := []string{"rid:1 Authorization Violation", "Error trying to connect to route"}
	for _, user := range users {
		if nc, err := nats.Connect(b.ClientURL(), nats.UserInfo(user, ""), nats.NoReconnect()); err == nil {
			nc.Close()
			t.Fatalf("%q logged in", user)
		}
	}
	lines.waitCount(t, "authentication error", len(users))
	if err := b.RoutesRefused(t.Context()); err != nil {
		t.Errorf("RoutesRefused = %v after clients' refused logins", err)
	}
	if strings.Contains(lines.String(), `msg="nats route`) {
		t.Errorf("clients' refused logins were logged as route trouble:\n%s", lines)
	}
}

// A login whose connection closed while it was decided (its client went,
// or kezd closed a login of a key being retired) is no warning; the
// server's other warnings are.
func TestServerLoggerWarnings(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ line, level string }{
		{"Could not register auth callout user: connection closed", "DEBUG"},
		{"Auth callout service returned an error: authorization violation", "DEBUG"},
		{"Plaintext passwords detected, use nkeys or bcrypt", "WARN"},
	} {
		var buf bytes.Buffer
		l := serverLogger{log: slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))}
		l.Warnf("%s", c.line)
		if !strings.Contains(buf.String(), "level="+c.level+" ") {
			t.Errorf("%q logged %q, want level %s", c.line, buf.String(), c.level)
		}
	}
}

// A route's "connection created" ends a route dial outage; a client that
// names itself so does not.
func TestRouteRecoveredOnlyByARoute(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, line string
		recovered  bool
	}{
		{"route", "127.0.0.1:6222 - rid:4 - Route connection created", true},
		{"client named so", `127.0.0.1:50312 - cid:7 - "v1.41.1:go:Route connection created" - Slow Consumer Detected - Route connection created`, false},
		{"words only", "Route connection created", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, nil))
			l := serverLogger{log: slog.New(slog.DiscardHandler), routes: newRouteWatch(log)}
			l.Errorf("%s", "Error trying to connect to route (attempt 1): dial tcp 127.0.0.1:6222: connect: connection refused")
			l.Noticef("%s", c.line)
			if got := strings.Contains(buf.String(), "recovered"); got != c.recovered {
				t.Fatalf("after %q the route watch logged %q; recovered %v, want %v", c.line, buf.String(), got, c.recovered)
			}
		})
	}
}
