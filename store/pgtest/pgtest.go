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
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
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
	server  *Cluster // nil when EnvURL is used
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
		if err := server.Stop(); err != nil {
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
		server, initErr = StartCluster()
		if initErr == nil {
			baseURL = server.URL()
		}
	})
	if initErr != nil {
		t.Fatalf("pgtest: %v", initErr)
	}

	name := databaseName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	u, err := CreateDatabase(ctx, baseURL, name)
	if err != nil {
		t.Fatalf("pgtest: %v%s", err, server.LogTail())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := DropDatabase(ctx, baseURL, name); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return u
}

// CreateDatabase creates the database name on the server at serverURL (an
// admin connection URL) and returns the new database's URL.
func CreateDatabase(ctx context.Context, serverURL, name string) (string, error) {
	u, err := withDatabase(serverURL, name)
	if err != nil {
		return "", err
	}
	if err := admin(ctx, serverURL, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return u, nil
}

// DropDatabase drops the database name, closing its connections.
func DropDatabase(ctx context.Context, serverURL, name string) error {
	if err := admin(ctx, serverURL, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
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
		return "", fmt.Errorf("parse server URL: %w", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", errors.New("the server URL must be a postgres:// URL")
	}
	u.Path = "/" + name
	return u.String(), nil
}
