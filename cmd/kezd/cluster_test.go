package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
	"golang.org/x/sync/errgroup"
)

// TestClusteredInstances runs two kezd on one Postgres with their embedded
// NATS servers clustered by flags. Senders through both at once: a stream on
// each instance sees the same complete sequence, in order, once each.
func TestClusteredInstances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	keys := t.TempDir()
	routeA := kezdtest.FreePort(t)
	a := startServe(t, "--database-url", db, "--data-dir", keys,
		"--nats-cluster-listen", fmt.Sprintf("127.0.0.1:%d", routeA))
	b := startServe(t, "--database-url", db, "--data-dir", keys,
		"--nats-cluster-listen", "127.0.0.1:-1", "--nats-routes", fmt.Sprintf("nats://127.0.0.1:%d", routeA))
	waitRouted(t, a, b)

	ctx := t.Context()
	ca, err := client.New(a.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := client.New(b.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	alice := kezdtest.Register(t, ctx, ca, "alice")
	senders := []*envelope.Identity{kezdtest.Register(t, ctx, ca, "s1"), kezdtest.Register(t, ctx, cb, "s2"), kezdtest.Register(t, ctx, ca, "s3"), kezdtest.Register(t, ctx, cb, "s4")}
	onA, _ := streamFrom(t, "stream on A", a.HTTPURL, alice, -1)
	onB, _ := streamFrom(t, "stream on B", b.HTTPURL, alice, -1)

	// A message sent via A is carried to B by the NATS cluster itself (the
	// streams would also get it from the store a second later, so look at
	// NATS directly), and reaches the stream on B.
	// The deployment's keys are the ones the instances keep in Postgres.
	pg, err := postgres.Open(ctx, postgres.Config{URL: db}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	deployment, err := deploymentKeys(ctx, config{DataDir: keys, DatabaseURL: db}, pg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	onBNATS, err := b.Broker.Connect(deployment.AppUser())
	if err != nil {
		t.Fatal(err)
	}
	defer onBNATS.Close()
	carried, err := onBNATS.SubscribeSync(protocol.InboxSubject("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := onBNATS.Flush(); err != nil {
		t.Fatal(err)
	}
	brokertest.WaitInterest(t, a.Broker, "alice", 1)
	if _, err := ca.Send(ctx, senders[0], "alice", []byte("via A")); err != nil {
		t.Fatal(err)
	}
	if m, err := carried.NextMsg(15 * time.Second); err != nil || m.Header.Get(protocol.SeqHeader) != "1" {
		t.Fatalf("the cluster did not carry A's publish to B: %v", err)
	}
	const perSender = 40
	g, gctx := errgroup.WithContext(ctx)
	for i, s := range senders {
		c := []*client.Client{ca, cb}[i%2]
		g.Go(func() error {
			for n := range perSender {
				if _, err := c.SendEnvelope(gctx, s, "alice", fmt.Sprintf("c-%d", n), []byte(`{"n":1}`)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	// A last message marks the end: a duplicate of anything before it would
	// show up ahead of it.
	if _, err := cb.Send(ctx, senders[1], "alice", []byte("the end")); err != nil {
		t.Fatal(err)
	}
	total := int64(2 + len(senders)*perSender)
	for name, ids := range map[string]<-chan int64{"A": onA, "B": onB} {
		for want := int64(1); want <= total; want++ {
			select {
			case got := <-ids:
				if got != want {
					t.Fatalf("stream on %s: got seq %d, want %d", name, got, want)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("stream on %s stopped at seq %d of %d", name, want-1, total)
			}
		}
	}
}

// waitRouted waits until the embedded servers have a route to each other.
// Routes have no event to wait on.
func waitRouted(t *testing.T, servers ...started) {
	t.Helper()
	for _, s := range servers {
		testwait.Until(t, "the embedded NATS servers to form a cluster", func() bool { return s.Broker.Server().NumRoutes() > 0 })
	}
}

func TestRouteCredentials(t *testing.T) {
	t.Parallel()
	keys, err := deploykeys.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	derived, err := keys.RoutePassword()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, user, password, wantUser, wantPassword string
	}{
		{"derived from the keys", "", "", deploykeys.RouteUser, derived},
		{"user given", "ops", "", "ops", derived},
		{"both given", "ops", "s3cret", "ops", "s3cret"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			user, password, err := routeCredentials(tt.user, tt.password, keys)
			if err != nil || user != tt.wantUser || password != tt.wantPassword {
				t.Errorf("routeCredentials = %q, %q, %v; want %q, %q", user, password, err, tt.wantUser, tt.wantPassword)
			}
		})
	}
}

// TestNATSConfigClusterRoutes: `kezd nats-config --cluster-routes` prints the
// route authorization that matches what serve derives from the same keys.
func TestNATSConfigClusterRoutes(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	var out strings.Builder
	args := []string{"nats-config", "--data-dir", dir, "--cluster-routes", "nats://kez-nats-1:6222, nats://kez-nats-2:6222"}
	if err := run(t.Context(), args, env(nil), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	keys, err := deploykeys.LoadOrCreateKeys(filepath.Join(dir, "nats-keys"))
	if err != nil {
		t.Fatal(err)
	}
	password, err := keys.RoutePassword()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`user: "kezd-route"`,
		`password: "` + password + `"`,
		`"nats://kezd-route:` + password + `@kez-nats-1:6222"`,
		`"nats://kezd-route:` + password + `@kez-nats-2:6222"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s:\n%s", want, out.String())
		}
	}
	if strings.Contains(out.String(), "auth_callout") {
		t.Error("cluster output contains the auth.conf part")
	}

	err = run(t.Context(), []string{"nats-config", "--data-dir", dir, "--nats-cluster-password", "x"}, env(nil), io.Discard, io.Discard)
	if err == nil {
		t.Error("--nats-cluster-password without --cluster-routes accepted")
	}
}
