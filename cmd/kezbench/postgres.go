package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/store/pgtest"
)

// database is a fresh database for one bench run, on the server the
// caller named or on a throwaway cluster; drop removes it (and the cluster).
type database struct {
	URL  string
	drop func() error
}

// openDatabase creates the run's database on the server at serverURL, or
// on a throwaway durable cluster (fsync on, the tests' harness) when
// serverURL is empty.
func openDatabase(ctx context.Context, serverURL string) (*database, error) {
	stop := func() error { return nil }
	if serverURL == "" {
		c, err := pgtest.StartCluster()
		if err != nil {
			return nil, fmt.Errorf("%w (or set %s)", err, envDatabaseURL)
		}
		serverURL, stop = c.URL(), c.Stop
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "kezbench_" + hex.EncodeToString(b[:])
	u, err := pgtest.CreateDatabase(ctx, serverURL, name)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	return &database{URL: u, drop: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return errors.Join(pgtest.DropDatabase(ctx, serverURL, name), stop())
	}}, nil
}

// postgresCPU returns a reader of the CPU time of the Postgres server at
// url (user plus system, of the postmaster and every process it started,
// those it has reaped included), or nil when that server's processes are
// not on this machine. The postmaster is found as the parent of the
// backend serving a connection of ours. Both servers under test share the
// database and only one is loaded at a time, so the difference over a run
// is that server's Postgres CPU.
func postgresCPU(ctx context.Context, url string) func() (time.Duration, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		return nil
	}
	st, err := readProcStat(backend)
	if err != nil || st.comm != "postgres" {
		return nil // not on this machine (or not a Postgres we can see)
	}
	master := st.ppid
	return func() (time.Duration, error) {
		dirs, err := os.ReadDir("/proc")
		if err != nil {
			return 0, err
		}
		var ticks int64
		for _, d := range dirs {
			pid, err := strconv.Atoi(d.Name())
			if err != nil {
				continue
			}
			st, err := readProcStat(pid)
			if err != nil || (pid != master && st.ppid != master) {
				continue // gone meanwhile, or not this server's
			}
			ticks += st.utime + st.stime + st.cutime + st.cstime
		}
		return time.Duration(ticks) * clockTick, nil
	}
}

// procStat is what kezbench reads of /proc/<pid>/stat.
type procStat struct {
	comm                         string
	ppid                         int
	utime, stime, cutime, cstime int64 // clock ticks
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(b[end+1:])) // f[0] is field 3
	if len(f) < 15 {
		return procStat{}, errors.New("short /proc stat")
	}
	st := procStat{comm: string(b[open+1 : end])}
	var errs [5]error
	st.ppid, errs[0] = strconv.Atoi(f[1])
	st.utime, errs[1] = strconv.ParseInt(f[11], 10, 64)
	st.stime, errs[2] = strconv.ParseInt(f[12], 10, 64)
	st.cutime, errs[3] = strconv.ParseInt(f[13], 10, 64)
	st.cstime, errs[4] = strconv.ParseInt(f[14], 10, 64)
	return st, errors.Join(errs[:]...)
}
