// Package kezdtest runs a real kezd for tests of the client and the CLI: the
// kezd binary, built from this module, as a child process on loopback ports,
// with its embedded NATS and a SQLite or Postgres store. A Server can be
// stopped and started again on the same addresses and data, which is how
// tests show that clients resume across a restart.
package kezdtest

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Config selects the server's store.
type Config struct {
	// DatabaseURL is a postgres:// URL; empty uses SQLite in the data dir.
	DatabaseURL string
	// Args are extra `kezd serve` flags.
	Args []string
}

// Server is a running kezd.
type Server struct {
	// URL is the base URL of the HTTP API; NATSURL the embedded NATS.
	URL     string
	NATSURL string

	t       testing.TB
	args    []string
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	logs    *bytes.Buffer
	logLock sync.Mutex
}

// Start builds kezd (once per test binary) and starts it. It is stopped when
// the test ends; its log is printed if the test failed.
func Start(t testing.TB, cfg Config) *Server {
	t.Helper()
	bin := Binary(t, "github.com/kez-chat/kezd/cmd/kezd", "kezd")
	httpPort, natsPort := freePort(t), freePort(t)
	s := &Server{
		URL:     "http://127.0.0.1:" + strconv.Itoa(httpPort),
		NATSURL: "nats://127.0.0.1:" + strconv.Itoa(natsPort),
		t:       t,
		logs:    &bytes.Buffer{},
	}
	s.args = append([]string{bin, "serve",
		"--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort),
		"--data-dir", t.TempDir(),
		"--database-url", cfg.DatabaseURL,
		"--shutdown-timeout", "5s",
		"--log-level", "debug",
	}, cfg.Args...)
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			s.logLock.Lock()
			t.Logf("kezd log:\n%s", s.logs.String())
			s.logLock.Unlock()
		}
	})
	s.start()
	return s
}

var servingRE = regexp.MustCompile(`msg="kezd serving"`)

func (s *Server) start() {
	s.t.Helper()
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.t.TempDir()}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout = nil
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		signalled := false
		for sc.Scan() {
			line := sc.Text()
			s.logLock.Lock()
			s.logs.WriteString(line + "\n")
			s.logLock.Unlock()
			if !signalled && servingRE.MatchString(line) {
				signalled = true
				close(ready)
			}
		}
		cmd.Wait()
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	select {
	case <-ready:
	case <-done:
		s.logLock.Lock()
		defer s.logLock.Unlock()
		s.t.Fatalf("kezd exited before serving:\n%s", s.logs.String())
	case <-time.After(60 * time.Second):
		s.t.Fatal("kezd did not start within 60s")
	}
}

// Stop ends kezd gracefully (SIGTERM) and waits for it. It is idempotent.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Restart stops kezd and starts it again with the same addresses and data.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// Logs returns what kezd has logged so far.
func (s *Server) Logs() string {
	s.logLock.Lock()
	defer s.logLock.Unlock()
	return s.logs.String()
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Binary builds the main package pkg of this module's build list (kezd, the
// nats CLI, kez) once per test binary and returns its path. The binaries go to
// a per-user directory under the temporary directory, replaced atomically, so
// parallel test binaries never see a half-written file.
func Binary(t testing.TB, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("kezdtest-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, fmt.Sprintf("%s-%d", name, os.Getpid()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, msg)
	}
	final := filepath.Join(dir, name)
	if err := os.Rename(out, final); err != nil {
		t.Fatal(err)
	}
	built[pkg] = final
	return final
}
