package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
	"github.com/kez-chat/kezd/store/storetest"
)

func open(t *testing.T, path string) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return open(t, filepath.Join(t.TempDir(), "kez.db"))
	})
}

func TestReopenKeepsDataAndMigrations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "kez.db")
	db, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateHandle(ctx, store.Handle{Handle: "alice", SigningKey: "aa", EncryptionKey: "bb"}); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	db = open(t, path) // migrations already recorded: must not run again
	if _, err := db.Handle(ctx, "alice"); err != nil {
		t.Fatalf("after reopening: %v", err)
	}
}

func TestClosedIsUnavailable(t *testing.T) {
	t.Parallel()
	db, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "kez.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = db.AppendMessage(t.Context(), store.NewMessage{From: "a", To: "b", ID: "1", Envelope: []byte(`{}`)})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("append on a closed store error = %v, want ErrUnavailable", err)
	}
}

// TestFilesArePrivate: the database and its WAL files are 0600 even in a
// data directory the operator made 0755 (they hold every message and key).
func TestFilesArePrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "kez.db")
	db := open(t, path)
	// A write, so that the WAL and shared-memory files exist.
	if _, err := db.CreateHandle(t.Context(), store.Handle{Handle: "alice", SigningKey: "aa", EncryptionKey: "bb"}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s is %#o, want 0600", filepath.Base(p), mode)
		}
	}
}
