package main

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
	osuser "os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// database is a fresh database for one bench run, on the server the
// caller named or on a throwaway cluster; drop removes it (and the cluster).
type database struct {
	URL  string
	drop func() error
}

// openDatabase creates the run's database on the server at serverURL, or
// on a throwaway durable cluster (fsync on) when serverURL is empty.
func openDatabase(ctx context.Context, serverURL string) (*database, error) {
	stop := func() error { return nil }
	if serverURL == "" {
		c, err := startCluster(ctx)
		if err != nil {
			return nil, err
		}
		serverURL, stop = c.url, c.stop
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "kezbench_" + hex.EncodeToString(b[:])
	if err := adminExec(ctx, serverURL, "CREATE DATABASE "+name); err != nil {
		return nil, errors.Join(fmt.Errorf("create database: %w", err), stop())
	}
	u, err := url.Parse(serverURL)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	u.Path = "/" + name
	return &database{URL: u.String(), drop: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := adminExec(ctx, serverURL, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		return errors.Join(err, stop())
	}}, nil
}

func adminExec(ctx context.Context, connURL, sql string) error {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// cluster is a throwaway Postgres in a temporary directory, started with
// the machine's initdb and pg_ctl (as the postgres OS user when we are
// root, which Postgres refuses to run as). It is what store/pgtest does for
// tests, reduced to what one bench run needs.
type cluster struct {
	dir, data, pgCtl, url string
	cred                  *syscall.Credential
}

func startCluster(ctx context.Context) (*cluster, error) {
	bin, err := postgresBin()
	if err != nil {
		return nil, err
	}
	c := &cluster{pgCtl: filepath.Join(bin, "pg_ctl")}
	if os.Geteuid() == 0 {
		u, err := osuser.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root needs a `postgres` OS user for the throwaway cluster: %w", err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if c.dir, err = os.MkdirTemp("", "kezbench-pg-"); err != nil {
		return nil, err
	}
	if c.cred != nil {
		if err := os.Chown(c.dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(c.dir)
			return nil, err
		}
	}
	c.data = filepath.Join(c.dir, "data")
	if out, err := c.run(ctx, filepath.Join(bin, "initdb"), "-D", c.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions"); err != nil {
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("initdb: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.RemoveAll(c.dir)
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	opts := fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on -c synchronous_commit=on", port, c.dir)
	if out, err := c.run(ctx, c.pgCtl, "-D", c.data, "-l", filepath.Join(c.dir, "postgres.log"), "-w", "-t", "60", "-o", opts, "start"); err != nil {
		_, _ = c.run(context.Background(), c.pgCtl, "-D", c.data, "-m", "immediate", "-w", "stop")
		os.RemoveAll(c.dir)
		return nil, fmt.Errorf("pg_ctl start: %v\n%s", err, out)
	}
	c.url = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port)
	return c, nil
}

func (c *cluster) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := c.run(ctx, c.pgCtl, "-D", c.data, "-m", "fast", "-w", "stop")
	return errors.Join(err, os.RemoveAll(c.dir))
}

// run runs a Postgres program as the cluster's user. Output goes to a file:
// pg_ctl start leaves the server holding whatever descriptors it was given.
func (c *cluster) run(ctx context.Context, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := os.CreateTemp("", "kezbench-pg-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(out.Name())
	defer out.Close()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "TZ=UTC", "HOME=" + c.dir}
	cmd.Stdout, cmd.Stderr = out, out
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	runErr := cmd.Run()
	text, _ := os.ReadFile(out.Name())
	return text, runErr
}

// postgresBin finds initdb and pg_ctl: on PATH, else the newest
// /usr/lib/postgresql/<version>/bin.
func postgresBin() (string, error) {
	if p, err := exec.LookPath("pg_ctl"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	ver := func(d string) float64 { v, _ := strconv.ParseFloat(filepath.Base(filepath.Dir(d)), 64); return v }
	sort.Slice(dirs, func(i, j int) bool { return ver(dirs[i]) > ver(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, pg_ctl) found; install PostgreSQL or set " + envDatabaseURL)
}
