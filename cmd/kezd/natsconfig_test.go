package main

import (
	"io"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/store/pgtest"
)

// TestNATSConfigSecretsFromEnvironment: nats-config reads the database URL
// and the cluster routes from the environment, though -h does not show them
// (see TestSecretsStayOutOfHelp).
func TestNATSConfigSecretsFromEnvironment(t *testing.T) {
	t.Parallel()
	natsConfigOut := func(t *testing.T, vars map[string]string) string {
		t.Helper()
		var out strings.Builder
		if err := run(t.Context(), []string{"nats-config", "--data-dir", t.TempDir()}, env(vars), &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	t.Run("KEZ_DATABASE_URL", func(t *testing.T) {
		t.Parallel()
		// Two empty data dirs would give two sets of keys; the database
		// gives both runs the deployment's.
		db := map[string]string{"KEZ_DATABASE_URL": pgtest.NewDatabase(t)}
		if a, b := natsConfigOut(t, db), natsConfigOut(t, db); a != b {
			t.Fatalf("two runs on one database printed different keys:\n%s\n%s", a, b)
		}
	})
	t.Run("KEZ_NATS_CLUSTER_ROUTES", func(t *testing.T) {
		t.Parallel()
		out := natsConfigOut(t, map[string]string{"KEZ_NATS_CLUSTER_ROUTES": "nats://kez-nats-1:6222"})
		if !strings.Contains(out, "@kez-nats-1:6222") {
			t.Fatalf("output lacks the route from the environment:\n%s", out)
		}
	})
}
