package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// startServe runs serve in-process with args and returns where it listens.
// The server is shut down (and must return nil) when the test ends.
func startServe(t *testing.T, args ...string) started {
	t.Helper()
	s, _ := startServeStop(t, args...)
	return s
}

// startServeStop is startServe that also returns stop, which shuts the
// server down (checking it returns nil) before the test ends; the cleanup
// then does nothing more.
func startServeStop(t *testing.T, args ...string) (started, func()) {
	t.Helper()
	s, stop, _ := startServeFull(t, args...)
	return s, stop
}

// startServeLogs is startServe that also returns the server's log.
func startServeLogs(t *testing.T, args ...string) (started, *syncBuffer) {
	t.Helper()
	s, _, logs := startServeFull(t, args...)
	return s, logs
}

func startServeFull(t *testing.T, args ...string) (started, func(), *syncBuffer) {
	t.Helper()
	cfg, err := parseServe(append([]string{
		"--listen", "127.0.0.1:0",
		"--admin-listen", "127.0.0.1:0",
		"--nats-listen", "127.0.0.1:-1",
		"--data-dir", t.TempDir(),
		"--log-level", "warn",
	}, args...), env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	up := make(chan started, 1)
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- serve(ctx, cfg, logs, func(s started) { up <- s }) }()
	var s started
	select {
	case s = <-up:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v\n%s", err, logs)
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve returned %v\n%s", err, logs)
			}
		})
	}
	t.Cleanup(stop)
	return s, stop, logs
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServeEmbeddedDefaults is the first-run promise: with no external
// service, kezd serves, and a handle can be registered, sent to and polled.
func TestServeEmbeddedDefaults(t *testing.T) {
	t.Parallel()
	s := startServe(t)
	ctx := t.Context()
	c, err := client.New(s.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	alice, bob := kezdtest.Register(t, ctx, c, "alice"), kezdtest.Register(t, ctx, c, "bob")
	if _, err := c.Send(ctx, bob, "alice", []byte("hello <alice> & co")); err != nil {
		t.Fatal(err)
	}
	page, err := c.Poll(ctx, alice, client.PollOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 || page.Messages[0].Seq != 1 || page.Messages[0].From != "bob" {
		t.Fatalf("poll = %+v", page)
	}
	opened, err := c.Open(ctx, alice, page.Messages[0])
	if err != nil || string(opened.Plaintext) != "hello <alice> & co" {
		t.Fatalf("open = %+v, %v", opened, err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get(s.HTTPURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s = %d", path, resp.StatusCode)
		}
	}
}

func TestRunCommands(t *testing.T) {
	t.Parallel()
	var out, errOut strings.Builder
	if err := run(t.Context(), []string{"version"}, env(nil), &out, &errOut); err != nil || !strings.HasPrefix(out.String(), "kezd ") {
		t.Fatalf("version: %q, %v", out.String(), err)
	}
	err := run(t.Context(), []string{"serve", "--auth-skew", "soon"}, env(nil), &out, &errOut)
	if err == nil || exitCode(err) != 2 || !strings.Contains(err.Error(), "--auth-skew") {
		t.Fatalf("bad flag: %v (exit %d)", err, exitCode(err))
	}
	if err := run(t.Context(), []string{"frobnicate"}, env(nil), &out, &errOut); exitCode(err) != 2 {
		t.Fatalf("unknown command: %v", err)
	}
	out.Reset()
	dir := t.TempDir()
	if err := run(t.Context(), []string{"nats-config", "--data-dir", dir}, env(nil), &out, &errOut); err != nil {
		t.Fatalf("nats-config: %v", err)
	}
	if !strings.Contains(out.String(), "auth_callout") {
		t.Fatalf("nats-config printed no auth_callout block:\n%s", out.String())
	}
	// The config names the keys serve will use from the same data dir.
	keys, err := loadKeys(config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := keys.Public()
	for _, k := range []string{pub.Issuer, pub.XKey, pub.Service} {
		if !strings.Contains(out.String(), k) {
			t.Fatalf("nats-config lacks key %s", k)
		}
	}
}

var servingAddr = regexp.MustCompile(`msg="kezd serving" http=(\S+)`)

// TestGracefulShutdownOnSignal runs the real binary: on SIGTERM it stops
// accepting connections, lets a request that is half uploaded finish, and
// exits 0.
func TestGracefulShutdownOnSignal(t *testing.T) {
	t.Parallel()
	bin := kezdtest.Binary(t, "github.com/kez-chat/kezd/cmd/kezd", "kezd")
	p := startProcess(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "off", "--nats-listen", "off",
		"--data-dir", t.TempDir(), "--shutdown-timeout", "30s")
	cmd, waitLine := p.cmd, p.waitLine
	addr := waitLine(servingAddr)[1]
	base := "http://" + addr
	ctx := t.Context()
	c, _ := client.New(base)
	bob := kezdtest.Register(t, ctx, c, "bob")
	kezdtest.Register(t, ctx, c, "alice")

	// A send whose body is only half uploaded when the signal arrives.
	body := []byte(`{"to":"alice","id":"inflight-1","envelope":{"text":"made it"}}`)
	ts := time.Now().Unix()
	sig := identity.Sign(bob.Signing, identity.SendString(sha256Hex(body), ts))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Authorization: Kez bob:%d:%s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", addr, ts, sig, len(body))
	half := len(body) / 2
	if _, err := conn.Write(body[:half]); err != nil {
		t.Fatal(err)
	}
	// Make sure the server has the request before signalling: it answers a
	// ping on a new connection only after accepting ours (accepts are in
	// order). A new one: http.Get could reuse the registrations' idle
	// keep-alive connection, and then ours might still wait in the accept
	// queue when the listener closes, which resets it.
	ping := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := ping.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitLine(regexp.MustCompile(`msg="shutting down"`))
	// New connections are refused once shutdown has begun. The listener
	// closes right after the log line, so retry until it has.
	testwait.Within(t, 3*time.Second, "new connections to be refused during shutdown", func() bool {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		nc.Close()
		return false
	})
	if _, err := conn.Write(body[half:]); err != nil {
		t.Fatal(err)
	}
	resp, err = http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	var sent struct{ Seq int64 }
	json.NewDecoder(resp.Body).Decode(&sent)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated || sent.Seq != 1 {
		t.Fatalf("in-flight request: status %d seq %d", resp.StatusCode, sent.Seq)
	}
	p.drain()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v", err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

func sha256Hex(b []byte) string { return identity.BodySHA256(b) }

// TestServeWebSocketOrigins: by default only pages of the public URL's
// origin may use the NATS WebSocket; --nats-websocket-origins '*' lets any.
func TestServeWebSocketOrigins(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		args     []string
		evilGets int
	}{
		{nil, http.StatusForbidden},
		{[]string{"--nats-websocket-origins", "*"}, http.StatusSwitchingProtocols},
	} {
		s := startServe(t, append([]string{"--nats-websocket-listen", "127.0.0.1:-1"}, tt.args...)...)
		ws := "http" + strings.TrimPrefix(s.Broker.WebSocketURL(), "ws")
		if got := wsUpgrade(t, ws, s.HTTPURL); got != http.StatusSwitchingProtocols {
			t.Errorf("%v: the public URL's origin gets %d", tt.args, got)
		}
		if got := wsUpgrade(t, ws, "https://evil.example"); got != tt.evilGets {
			t.Errorf("%v: another origin gets %d, want %d", tt.args, got, tt.evilGets)
		}
	}
}

// wsUpgrade asks url for a WebSocket upgrade from a page of origin and
// returns the status.
func wsUpgrade(t *testing.T, url, origin string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
		"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin} {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode
}
