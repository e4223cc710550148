package main

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/store/pgtest"
)

// With an external nats-server and a system-account user, a handle's NATS
// connections are capped too (defect: not at all with --nats-url), by the
// servers' own count, asked through the system account: with SQLite or
// Postgres alike, a closed connection frees its slot, and connections that
// outlive the kezd instance that let them in still count for the next one.
func TestExternalNATSConnectionsPerHandle(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"sqlite", "postgres"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dataDir := t.TempDir()
			args := []string{"--data-dir", dataDir}
			if name == "postgres" {
				args = append(args, "--database-url", pgtest.NewDatabase(t))
			}
			natsURL := externalNATS(t, dataDir, "sys-secret")
			args = append(args, "--nats-url", natsURL,
				"--nats-system-user", "kezd-sys", "--nats-system-password", "sys-secret",
				"--nats-max-conns-per-handle", "2")
			s, stop := startServeStop(t, args...)
			ctx := t.Context()
			c, _ := client.New(s.HTTPURL)
			alice := kezdtest.Register(t, ctx, c, "alice")
			var conns []*nats.Conn
			for range 2 {
				nc, err := client.ConnectNATS(natsURL, alice, nats.NoReconnect())
				if err != nil {
					t.Fatalf("login within the cap: %v", err)
				}
				t.Cleanup(nc.Close)
				conns = append(conns, nc)
			}
			wantNATSCapped(t, natsURL, alice)
			bob := kezdtest.Register(t, ctx, c, "bob")
			nc, err := client.ConnectNATS(natsURL, bob, nats.NoReconnect())
			if err != nil {
				t.Fatalf("another handle's login: %v", err)
			}
			nc.Close()

			conns[0].Close()
			testwait.Until(t, "a login after one of the two closed", func() bool {
				nc, err := client.ConnectNATS(natsURL, alice, nats.NoReconnect())
				if err != nil {
					return false
				}
				t.Cleanup(nc.Close)
				return true
			})
			wantNATSCapped(t, natsURL, alice)

			// A new instance in its place: alice's two connections are still
			// open, and still fill the cap.
			stop()
			startServe(t, args...)
			wantNATSCapped(t, natsURL, alice)
		})
	}
}

// wantNATSCapped checks that a login of id at url is refused.
func wantNATSCapped(t *testing.T, url string, id *envelope.Identity) {
	t.Helper()
	if nc, err := client.ConnectNATS(url, id, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("a login was accepted past the cap of 2")
	}
}
