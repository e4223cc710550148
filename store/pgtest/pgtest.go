// Package pgtest gives tests a real Postgres: a fresh, isolated database per
// test, on the server named by KEZ_TEST_DATABASE_URL or, when that is unset,
// on a throwaway cluster that the harness starts with the machine's initdb and
// pg_ctl, once per test binary, and removes when the tests end.
//
// A package that uses it calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
//
// and each test asks for its own database:
//
//	url := pgtest.NewDatabase(t)
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvURL names the environment variable that points the harness at an
// existing server instead of a throwaway cluster. The harness creates (and
// drops) one database per test in it, so the URL's role needs CREATEDB.
const EnvURL = "KEZ_TEST_DATABASE_URL"

const installHint = "install PostgreSQL (e.g. `apt-get install -y postgresql`) or set " + EnvURL + " to a postgres:// URL of a server the tests may create databases in"

var (
	mainCalled atomic.Bool

	once    sync.Once
	server  *cluster // nil when EnvURL is used
	baseURL string   // admin URL of the server
	initErr error

	seq atomic.Int64
)

// Main runs the tests of a package, then stops and removes the throwaway
// cluster if one was started, and exits with the tests' code. Call it from
// TestMain.
func Main(m *testing.M) {
	mainCalled.Store(true)
	code := m.Run()
	if server != nil {
		if err := server.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "pgtest: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	os.Exit(code)
}

// NewDatabase creates an empty database for this test and returns its
// postgres:// URL. The database is dropped when the test ends; with a
// throwaway cluster, whatever is left goes with the cluster.
func NewDatabase(t testing.TB) string {
	t.Helper()
	if !mainCalled.Load() {
		t.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain, so the throwaway cluster is removed after the tests")
	}
	once.Do(func() {
		if u := os.Getenv(EnvURL); u != "" {
			baseURL = u
			return
		}
		server, initErr = startCluster()
		if initErr == nil {
			baseURL = server.url
		}
	})
	if initErr != nil {
		t.Fatalf("pgtest: %v", initErr)
	}

	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := admin(ctx, baseURL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatalf("pgtest: create database %s: %v%s", name, err, server.logTail())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := admin(ctx, baseURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	u, err := withDatabase(baseURL, name)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return u
}

func admin(ctx context.Context, connURL, sql string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// databaseName makes a unique, legal, recognisable database name.
func databaseName(test string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	slug := unsafeChars.ReplaceAllString(strings.ToLower(test), "_")
	if len(slug) > 36 {
		slug = slug[:36]
	}
	return fmt.Sprintf("kez_%s_%d_%s", slug, seq.Add(1), hex.EncodeToString(b[:]))
}

func withDatabase(connURL, name string) (string, error) {
	u, err := url.Parse(connURL)
	if err != nil {
		return "", fmt.Errorf("parse %s: %w", EnvURL, err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("%s must be a postgres:// URL", EnvURL)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// cluster is a throwaway Postgres cluster in a temporary directory.
type cluster struct {
	dir     string // removed on stop
	data    string
	logFile string
	pgCtl   string
	cred    *syscall.Credential // nil: run as ourselves
	url     string
}

func startCluster() (*cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	c := &cluster{pgCtl: filepath.Join(bin, "pg_ctl")}

	if os.Geteuid() == 0 {
		// Postgres refuses to run as root; run it as the unprivileged user
		// the distribution's package creates.
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs an unprivileged `postgres` OS user to run the cluster as: %v; %s", err, installHint)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}

	c.dir, err = os.MkdirTemp("", "kez-pgtest-")
	if err != nil {
		return nil, err
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(c.dir)
			return nil, err
		}
	}
	c.data = filepath.Join(c.dir, "data")
	c.logFile = filepath.Join(c.dir, "postgres.log")

	if out, err := c.run(2*time.Minute, filepath.Join(bin, "initdb"),
		"-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"); err != nil {
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}

	// A port that was free a moment ago may be taken by the time the server
	// binds it; try a few.
	var lastErr error
	for range 3 {
		port, err := freePort()
		if err != nil {
			os.RemoveAll(c.dir)
			return nil, err
		}
		opts := strings.Join([]string{
			"-p", strconv.Itoa(port),
			"-k", c.dir,
			"-c", "listen_addresses=127.0.0.1",
			"-c", "max_connections=300",
			"-c", "fsync=on",
			"-c", "synchronous_commit=on",
		}, " ")
		out, err := c.run(90*time.Second, c.pgCtl, "-D", c.data, "-l", c.logFile, "-w", "-t", "60", "-o", opts, "start")
		if err == nil {
			c.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			return c, nil
		}
		lastErr = fmt.Errorf("pg_ctl start: %v\n%s%s", err, out, c.logTail())
		// Make sure nothing is left running before trying again.
		_, _ = c.run(30*time.Second, c.pgCtl, "-D", c.data, "-m", "immediate", "-w", "stop")
	}
	os.RemoveAll(c.dir)
	return nil, lastErr
}

func (c *cluster) stop() error {
	out, err := c.run(60*time.Second, c.pgCtl, "-D", c.data, "-m", "fast", "-w", "-t", "30", "stop")
	if err != nil {
		err = fmt.Errorf("pg_ctl stop: %v\n%s%s", err, out, c.logTail())
		_, _ = c.run(30*time.Second, c.pgCtl, "-D", c.data, "-m", "immediate", "-w", "stop")
	}
	if rerr := os.RemoveAll(c.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// run runs a Postgres program as the cluster's OS user, bounded in time.
func (c *cluster) run(timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", "HOME=" + c.dir}
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	// pg_ctl start leaves the server running with our stdout open if we give
	// it one; use files so Wait does not hang on the server's descriptors.
	out, err := os.CreateTemp("", "kez-pgtest-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	runErr := cmd.Run()
	text, _ := os.ReadFile(out.Name())
	return text, runErr
}

// logTail returns the end of the server log, for failure messages.
func (c *cluster) logTail() string {
	if c == nil {
		return ""
	}
	b, err := os.ReadFile(c.logFile)
	if err != nil || len(b) == 0 {
		return ""
	}
	const max = 4000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return "\n--- postgres log (tail) ---\n" + string(b)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// findBinaries finds the directory holding initdb and pg_ctl: PATH first,
// then Debian's /usr/lib/postgresql/<version>/bin, highest version.
func findBinaries() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		dir := filepath.Dir(p)
		if _, err := os.Stat(filepath.Join(dir, "pg_ctl")); err == nil {
			return dir, nil
		}
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
	for _, dir := range dirs {
		_, e1 := os.Stat(filepath.Join(dir, "initdb"))
		_, e2 := os.Stat(filepath.Join(dir, "pg_ctl"))
		if e1 == nil && e2 == nil {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; " + installHint)
}

func version(binDir string) float64 {
	v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(binDir)), 64)
	return v
}
