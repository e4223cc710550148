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
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
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

	t       testing.TB // nil for a Launch-ed server
	args    []string
	home    string // HOME of the process, and the parent of its data dir
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
	s, err := launch(bin, t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.t = t
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("kezd log:\n%s", s.Logs())
		}
	})
	return s
}

// Launch builds and starts kezd outside a test: for a TestMain or an
// Example. The caller ends it with Close.
func Launch(cfg Config) (*Server, error) {
	bin, err := Build("github.com/kez-chat/kezd/cmd/kezd", "kezd")
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kezdtest-")
	if err != nil {
		return nil, err
	}
	s, err := launch(bin, dir, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return s, nil
}

// Close stops a Launch-ed kezd and removes its data.
func (s *Server) Close() error {
	s.Stop()
	return os.RemoveAll(s.home)
}

func launch(bin, dir string, cfg Config) (*Server, error) {
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	natsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL:     "http://127.0.0.1:" + strconv.Itoa(httpPort),
		NATSURL: "nats://127.0.0.1:" + strconv.Itoa(natsPort),
		home:    dir,
		logs:    &bytes.Buffer{},
	}
	s.args = append([]string{bin, "serve",
		"--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort),
		"--admin-listen", "off", // its default port would be shared by every test's server
		"--data-dir", filepath.Join(dir, "data"),
		"--database-url", cfg.DatabaseURL,
		"--shutdown-timeout", "5s",
		"--log-level", "debug",
	}, cfg.Args...)
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

var servingRE = regexp.MustCompile(`msg="kezd serving"`)

// start runs the process and waits until it logs that it is serving.
func (s *Server) start() error {
	cmd := exec.Command(s.args[0], s.args[1:]...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.home}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
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
		return nil
	case <-done:
		s.mu.Lock()
		s.cmd = nil
		s.mu.Unlock()
		return fmt.Errorf("kezd exited before serving:\n%s", s.Logs())
	case <-time.After(60 * time.Second):
		s.Stop()
		return fmt.Errorf("kezd did not start within 60s:\n%s", s.Logs())
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

// Freeze stops the process (SIGSTOP) without ending it: its connections stay
// open and silent, as with a hung server. Thaw resumes it.
func (s *Server) Freeze() { s.signal(syscall.SIGSTOP) }

// Thaw resumes a frozen process (SIGCONT).
func (s *Server) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Server) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = s.cmd.Process.Signal(sig)
	}
}

// Restart stops kezd and starts it again with the same addresses and data.
// It fails the test (or, for a Launch-ed server, returns the error) if the
// new process does not come up.
func (s *Server) Restart() error {
	s.Stop()
	err := s.start()
	if err != nil && s.t != nil {
		s.t.Helper()
		s.t.Fatal(err)
	}
	return err
}

// Logs returns what kezd has logged so far.
func (s *Server) Logs() string {
	s.logLock.Lock()
	defer s.logLock.Unlock()
	return s.logs.String()
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a loopback port that was free a moment ago, for a
// process that takes its port as a flag or a config file's setting.
func FreePort(t testing.TB) int {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

var (
	buildMu sync.Mutex
	built   = map[string]string{}
)

// Binary builds the main package pkg of the server module's build list
// (kezd, the nats CLI, kez) once per test binary and returns its path, failing the test
// if it does not build.
func Binary(t testing.TB, pkg, name string) string {
	t.Helper()
	p, err := Build(pkg, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// serverModule returns the directory of kezd's server module, the
// repository root this package's source sits in (client/kezdtest): the
// client module does not require the server's, so kezd is built there.
func serverModule() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("kezdtest: cannot locate its own source")
	}
	root := filepath.Join(filepath.Dir(file), "..", "..")
	mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil || !bytes.HasPrefix(mod, []byte("module github.com/kez-chat/kezd\n")) {
		return "", fmt.Errorf("kezdtest: %s is not kezd's server module (built with -trimpath?)", root)
	}
	return root, nil
}

// Build is Binary outside a test. The binaries go to a per-user directory
// under the temporary directory, replaced atomically, so parallel test
// binaries never see a half-written file. Each module checkout (worktree)
// has its own file there: a shared name would let a test run a kezd built
// from another checkout's sources.
func Build(pkg, name string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[pkg]; ok {
		return p, nil
	}
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("kezdtest-%d", os.Getuid()))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	out := filepath.Join(dir, fmt.Sprintf("%s-%d", name, os.Getpid()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	root, err := serverModule()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = root
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, msg)
	}
	sum := sha256.Sum256([]byte(root)) // the checkout the binary was built from
	final := filepath.Join(dir, fmt.Sprintf("%s-%x", name, sum[:6]))
	if err := os.Rename(out, final); err != nil {
		return "", err
	}
	built[pkg] = final
	return final, nil
}
