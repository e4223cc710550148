package main

import (
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
)

// TestExternalNATS runs kezd against a separate nats-server process whose
// configuration is what `kezd nats-config` prints for the same data dir: kezd
// logs in as the deployment's app user, answers the auth callout, and a kez
// user logs in with her own key and receives what was sent over HTTP.
func TestExternalNATS(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	var conf strings.Builder
	if err := run(t.Context(), []string{"nats-config", "--data-dir", dataDir}, env(nil), &conf, os.Stderr); err != nil {
		t.Fatal(err)
	}
	confDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(confDir, "auth.conf"), []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	main := "listen: 127.0.0.1:-1\ninclude \"auth.conf\"\n"
	if err := os.WriteFile(filepath.Join(confDir, "nats.conf"), []byte(main), 0o600); err != nil {
		t.Fatal(err)
	}
	natsURL := startNATSServer(t, filepath.Join(confDir, "nats.conf"))

	s := startServe(t, "--data-dir", dataDir, "--nats-url", natsURL)
	ctx := t.Context()
	c, _ := client.New(s.HTTPURL)
	alice, bob := kezdtest.Register(t, ctx, c, "alice"), kezdtest.Register(t, ctx, c, "bob")

	nc, err := client.ConnectNATS(natsURL, alice)
	if err != nil {
		t.Fatalf("alice's NATS login: %v", err)
	}
	defer nc.Close()
	got := make(chan client.Message, 1)
	if _, err := client.SubscribeInbox(nc, "alice", func(m client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, bob, "alice", []byte("over the external server")); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-got:
		if m.From != "bob" || m.Seq != 1 {
			t.Fatalf("got %+v", m)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("alice received nothing over NATS")
	}

	// Someone without a registered key is refused.
	stranger, err := envelope.Generate("mallory")
	if err != nil {
		t.Fatal(err)
	}
	if nc, err := client.ConnectNATS(natsURL, stranger); err == nil {
		nc.Close()
		t.Fatal("an unregistered key logged in")
	}
}

var natsListening = regexp.MustCompile(`Listening for client connections on (\S+)`)

// startNATSServer runs nats-server, built from the version in go.mod, with
// the config file, and returns its client URL.
func startNATSServer(t *testing.T, conf string) string {
	t.Helper()
	bin := kezdtest.Binary(t, "github.com/nats-io/nats-server/v2", "nats-server")
	p := startProcess(t, bin, "-c", conf)
	a := p.waitLine(natsListening)[1]
	go p.drain()
	if _, _, err := net.SplitHostPort(a); err != nil {
		t.Fatalf("nats-server address %q", a)
	}
	return "nats://" + a
}
