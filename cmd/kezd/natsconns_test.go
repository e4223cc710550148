package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/store/pgtest"
)

// A handle's NATS connections are capped (defect: nothing bounded them): a
// login beyond the cap is refused, and one is accepted again when a
// connection closes.
func TestNATSConnectionsPerHandle(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--nats-max-conns-per-handle", "2")
	ctx := t.Context()
	c, _ := client.New(s.HTTPURL)
	alice := kezdtest.Register(t, ctx, c, "alice")
	var conns []*nats.Conn
	for range 2 {
		nc, err := client.ConnectNATS(s.NATSURL, alice, nats.NoReconnect())
		if err != nil {
			t.Fatalf("login within the cap: %v", err)
		}
		defer nc.Close()
		conns = append(conns, nc)
	}
	if nc, err := client.ConnectNATS(s.NATSURL, alice, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a third login was accepted past the cap of 2")
	}
	if _, body := get(t, s.AdminURL+"/metrics"); !strings.Contains(body, `kezd_rate_limited_total{limit="nats_connections_per_handle"} 1`+"\n") {
		t.Errorf("metrics do not count the refusal at the cap:\n%s", body)
	}
	bob := kezdtest.Register(t, ctx, c, "bob")
	nc, err := client.ConnectNATS(s.NATSURL, bob, nats.NoReconnect())
	if err != nil {
		t.Fatalf("another handle's login: %v", err)
	}
	nc.Close()
	conns[0].Close()
	// The server forgets a closed connection at once; a fresh login fits.
	for attempt := 0; ; attempt++ {
		nc, err := client.ConnectNATS(s.NATSURL, alice, nats.NoReconnect())
		if err == nil {
			nc.Close()
			break
		}
		if attempt == 50 {
			t.Fatalf("login after a connection closed: %v", err)
		}
	}
}

// With two instances on one Postgres and their embedded NATS servers
// clustered, the cap holds for the deployment (defect: each server counted
// its own, so a handle held 2×3): 2 logins on A and 1 on B fill a cap of 3,
// a 4th is refused on either, and a closed connection frees its slot on
// the other instance too. Another handle is unaffected.
func TestNATSConnectionsPerHandleAcrossInstances(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	keys := t.TempDir()
	routeA := kezdtest.FreePort(t)
	args := []string{"--database-url", db, "--data-dir", keys, "--nats-max-conns-per-handle", "3"}
	a := startServe(t, append(args, "--nats-cluster-listen", fmt.Sprintf("127.0.0.1:%d", routeA))...)
	b := startServe(t, append(args, "--nats-cluster-listen", "127.0.0.1:-1",
		"--nats-routes", fmt.Sprintf("nats://127.0.0.1:%d", routeA))...)
	waitRouted(t, a, b)
	ctx := t.Context()
	c, _ := client.New(a.HTTPURL)
	alice := kezdtest.Register(t, ctx, c, "alice")
	login := func(s started) (*nats.Conn, error) {
		// Only s: nats.go would try a refused login again on the servers
		// of the cluster that s's INFO names.
		nc, err := client.ConnectNATS(s.NATSURL, alice, nats.NoReconnect(), nats.IgnoreDiscoveredServers())
		if err == nil {
			t.Cleanup(nc.Close)
		}
		return nc, err
	}
	var onA []*nats.Conn
	for _, s := range []started{a, a, b} {
		nc, err := login(s)
		if err != nil {
			t.Fatalf("login within the cap: %v", err)
		}
		if s == a {
			onA = append(onA, nc)
		}
	}
	for name, s := range map[string]started{"A": a, "B": b} {
		if _, err := login(s); err == nil {
			t.Fatalf("a 4th login on %s was accepted past the deployment's cap of 3", name)
		}
	}
	bob := kezdtest.Register(t, ctx, c, "bob")
	nc, err := client.ConnectNATS(b.NATSURL, bob, nats.NoReconnect())
	if err != nil {
		t.Fatalf("another handle's login: %v", err)
	}
	nc.Close()

	onA[0].Close()
	// A's server forgets the connection when it reads the close, and A
	// gives its lease back at its next sweep; neither is an event here.
	testwait.Until(t, "a login on B after one on A closed", func() bool {
		_, err := login(b)
		return err == nil
	})
	if _, err := login(a); err == nil {
		t.Fatal("a login on A was accepted past the cap once B took the freed slot")
	}
}
