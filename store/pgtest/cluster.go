package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Cluster is a throwaway Postgres cluster in a temporary directory, started
// with the machine's initdb and pg_ctl, durable (fsync on) and reachable on a
// free loopback port. The test harness starts one per test binary; bench
// commands may start their own.
type Cluster struct {
	dir     string // removed on stop
	data    string
	logFile string
	pgCtl   string
	cred    *syscall.Credential // nil: run as ourselves
	url     string
	opts    string // the server options it was started with
}

// StartCluster initialises and starts a cluster. When the process runs as
// root, which Postgres refuses, the cluster runs as the unprivileged
// `postgres` OS user.
func StartCluster() (*Cluster, error) {
	bin, err := findBinaries()
	if err != nil {
		return nil, err
	}
	c := &Cluster{pgCtl: filepath.Join(bin, "pg_ctl")}

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
			c.opts = opts
			c.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
			return c, nil
		}
		lastErr = fmt.Errorf("pg_ctl start: %v\n%s%s", err, out, c.LogTail())
		// Make sure nothing is left running before trying again.
		_, _ = c.run(30*time.Second, c.pgCtl, "-D", c.data, "-m", "immediate", "-w", "stop")
	}
	os.RemoveAll(c.dir)
	return nil, lastErr
}

// URL is the admin connection URL of the cluster's postgres database.
func (c *Cluster) URL() string { return c.url }

// Pause stops the server (fast shutdown: connections are cut, nothing
// committed is lost), keeping its data, for a test of an outage; Resume
// starts it again on the same port.
func (c *Cluster) Pause() error {
	if out, err := c.run(60*time.Second, c.pgCtl, "-D", c.data, "-m", "fast", "-w", "-t", "30", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %v\n%s%s", err, out, c.LogTail())
	}
	return nil
}

// Resume starts a paused server again.
func (c *Cluster) Resume() error {
	if out, err := c.run(90*time.Second, c.pgCtl, "-D", c.data, "-l", c.logFile, "-w", "-t", "60", "-o", c.opts, "start"); err != nil {
		return fmt.Errorf("pg_ctl start: %v\n%s%s", err, out, c.LogTail())
	}
	return nil
}

// Stop stops the cluster and removes its directory.
func (c *Cluster) Stop() error {
	out, err := c.run(60*time.Second, c.pgCtl, "-D", c.data, "-m", "fast", "-w", "-t", "30", "stop")
	if err != nil {
		err = fmt.Errorf("pg_ctl stop: %v\n%s%s", err, out, c.LogTail())
		_, _ = c.run(30*time.Second, c.pgCtl, "-D", c.data, "-m", "immediate", "-w", "stop")
	}
	if rerr := os.RemoveAll(c.dir); rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// run runs a Postgres program as the cluster's OS user, bounded in time.
func (c *Cluster) run(timeout time.Duration, name string, args ...string) ([]byte, error) {
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

// LogTail returns the end of the server log, for failure messages; "" for a
// nil Cluster.
func (c *Cluster) LogTail() string {
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
