package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/store/postgres"
)

// natsConfig prints a nats-server configuration whose accounts, users and
// auth_callout block match this deployment's keys (from the seed flags, the
// database or --data-dir, exactly as serve finds them), so no operator crafts keys by hand.
// With --cluster-routes it prints instead the route authorization and routes
// that each node of a cluster includes in its cluster {} block.
func natsConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	var c config
	fs := flag.NewFlagSet("kezd nats-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &envFlags{fs: fs, getenv: getenv}
	e.str(&c.DataDir, "data-dir", "KEZ_DATA_DIR", "./kez-data", "directory holding the generated keys")
	e.secret(&c.DatabaseURL, "database-url", "KEZ_DATABASE_URL", "postgres:// URL of the deployment's database, which keeps its keys (as kezd serve does)")
	e.secret(&c.Seeds.Issuer, "callout-issuer-seed", "KEZ_CALLOUT_ISSUER_SEED", "auth callout issuer account seed")
	e.secret(&c.Seeds.XKey, "callout-xkey-seed", "KEZ_CALLOUT_XKEY_SEED", "auth callout curve seed")
	e.secret(&c.Seeds.Service, "callout-service-seed", "KEZ_CALLOUT_SERVICE_SEED", "auth callout service user seed")
	e.secret(&c.Seeds.App, "callout-app-seed", "KEZ_CALLOUT_APP_SEED", "kezd's own NATS user seed")
	var routes string
	e.secret(&routes, "cluster-routes", "KEZ_NATS_CLUSTER_ROUTES", "print instead the route authorization for a cluster's nodes, with these comma-separated route URLs (nats://host:6222, every node)")
	e.str(&c.NATS.ClusterUser, "nats-cluster-user", "KEZ_NATS_CLUSTER_USER", "", "with --cluster-routes: route user (default kezd-route)")
	e.secret(&c.NATS.ClusterPassword, "nats-cluster-password", "KEZ_NATS_CLUSTER_PASSWORD", "with --cluster-routes: route password (default derived from the NATS keys)")
	if err := e.parse(args, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q", fs.Arg(0))}
	}
	keys, err := natsConfigKeys(c, stderr)
	if err != nil {
		return err
	}
	if routes != "" {
		user, password, err := routeCredentials(c.NATS.ClusterUser, c.NATS.ClusterPassword, keys)
		if err != nil {
			return err
		}
		return authcallout.WriteClusterConfig(stdout, authcallout.ClusterConfigOptions{User: user, Password: password, Routes: splitList(routes)})
	}
	if c.NATS.ClusterUser != "" || c.NATS.ClusterPassword != "" {
		return usageError{errors.New("--nats-cluster-user/--nats-cluster-password need --cluster-routes")}
	}
	pub, err := keys.Public()
	if err != nil {
		return fmt.Errorf("nats keys: %w", err)
	}
	return authcallout.WriteNATSConfig(stdout, authcallout.NATSConfigOptions{Keys: pub})
}

// natsConfigKeys are the keys serve would use with the same settings: with
// --database-url the deployment's, kept in (or, first, stored into) the
// database.
func natsConfigKeys(c config, stderr io.Writer) (deploykeys.Keys, error) {
	if c.DatabaseURL == "" || seedsGiven(c) {
		return loadKeys(c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := postgres.Open(ctx, postgres.Config{URL: c.DatabaseURL}, log)
	if err != nil {
		return deploykeys.Keys{}, fmt.Errorf("open postgres (--database-url): %w", err)
	}
	defer db.Close()
	return deploymentKeys(ctx, c, db, log)
}
