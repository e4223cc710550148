package main

import (
	"testing"

	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
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
