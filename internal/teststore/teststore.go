// Package teststore opens fresh stores of both backends, SQLite and
// Postgres, for the tests of the packages above the store (the core, the
// HTTP API). The store's own tests use store/storetest instead; only test
// files import this package.
package teststore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
	"github.com/kez-chat/kezd/store/sqlite"
)

// Store is what both backends offer the tests: the core's store, and the
// two reads the HTTP API's tests make of it directly.
type Store interface {
	chat.Store
	ListMessages(ctx context.Context, to string, since int64, limit int) ([]store.Message, error)
	Ping(ctx context.Context) error
}

// SQLite opens a fresh, empty SQLite store in t's temporary directory,
// closed when t ends.
func SQLite(t testing.TB) *sqlite.DB {
	t.Helper()
	db, _ := sqliteAt(t)
	return db
}

func sqliteAt(t testing.TB) (*sqlite.DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kez.db")
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

// Postgres opens a fresh, empty Postgres database (see pgtest), closed
// when t ends.
func Postgres(t testing.TB) *postgres.DB {
	t.Helper()
	return PostgresOn(t, pgtest.NewDatabase(t))
}

// PostgresOn opens the Postgres database at url, closed when t ends: a
// second one on the same url is a second kezd instance.
func PostgresOn(t testing.TB, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), postgres.Config{URL: url}, nil)
	if err != nil {
		t.Fatalf("open postgres: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Prunable is a fresh store whose messages a test can delete as a
// retention job elsewhere would, behind the store's back: the stores have
// no such delete, so it is SQL on the backend's database.
type Prunable struct {
	Store
	// DeleteSeqs deletes to's messages with from <= seq <= through.
	DeleteSeqs func(t testing.TB, to string, from, through int64)
}

// Backend is one kind of store.
type Backend struct {
	Name string
	// Open opens a fresh, empty store of this kind, closed when t ends.
	Open func(t testing.TB) Prunable
}

// Backends are both kinds of store, for tests that run against each.
var Backends = []Backend{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

func openSQLite(t testing.TB) Prunable {
	t.Helper()
	db, path := sqliteAt(t)
	raw, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return Prunable{Store: db, DeleteSeqs: func(t testing.TB, to string, from, through int64) {
		t.Helper()
		if _, err := raw.ExecContext(t.Context(), `DELETE FROM messages WHERE recipient = ? AND seq BETWEEN ? AND ?`, to, from, through); err != nil {
			t.Fatal(err)
		}
	}}
}

func openPostgres(t testing.TB) Prunable {
	t.Helper()
	url := pgtest.NewDatabase(t)
	return Prunable{Store: PostgresOn(t, url), DeleteSeqs: func(t testing.TB, to string, from, through int64) {
		t.Helper()
		conn, err := pgx.Connect(t.Context(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(t.Context(), `DELETE FROM messages WHERE recipient = $1 AND seq BETWEEN $2 AND $3`, to, from, through); err != nil {
			t.Fatal(err)
		}
	}}
}
