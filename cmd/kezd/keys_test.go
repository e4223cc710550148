package main

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// TestInstancesAgreeOnKeysThroughPostgres: instances on one database with
// data dirs of their own use one set of NATS keys, the first instance's;
// one that brings other keys in its data dir is told they are ignored.
func TestInstancesAgreeOnKeysThroughPostgres(t *testing.T) {
	t.Parallel()
	db, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.NewDatabase(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	keysOf := func(dataDir string) (deploykeys.PublicKeys, string) {
		t.Helper()
		var logs bytes.Buffer
		k, err := deploymentKeys(context.Background(), config{DataDir: dataDir, DatabaseURL: "postgres://x"}, db, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		pub, err := k.Public()
		if err != nil {
			t.Fatal(err)
		}
		return pub, logs.String()
	}
	first, log1 := keysOf(t.TempDir())
	if !strings.Contains(log1, "created for the deployment") {
		t.Errorf("first instance logged %q, want the keys created", log1)
	}
	second, _ := keysOf(t.TempDir())
	if second != first {
		t.Errorf("second instance uses %+v, the first %+v", second, first)
	}
	// An instance with keys of its own in its data dir.
	dir := t.TempDir()
	own, err := deploykeys.LoadOrCreateKeys(filepath.Join(dir, "nats-keys"))
	if err != nil {
		t.Fatal(err)
	}
	ownPub, _ := own.Public()
	third, log3 := keysOf(dir)
	if third != first || ownPub == first {
		t.Errorf("instance with its own keys uses %+v, want the deployment's %+v", third, first)
	}
	if !strings.Contains(log3, "differ and are ignored") {
		t.Errorf("instance with its own keys logged %q, want a warning", log3)
	}
	// Seeds from flags win over the database.
	gen, _ := deploykeys.GenerateKeys()
	seeds, _ := gen.Seeds()
	k, err := deploymentKeys(context.Background(), config{DataDir: t.TempDir(), DatabaseURL: "postgres://x", Seeds: seeds},
		db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := k.Public(); got == first {
		t.Error("keys given by flags were replaced by the database's")
	}
}
