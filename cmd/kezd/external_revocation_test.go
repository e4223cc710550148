package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
)

// externalNATS runs a real nats-server with the accounts `kezd nats-config`
// writes for dataDir; with sysPassword set, its system account has a user
// "kezd-sys" with that password, which kezd can be given, and which bypasses
// the auth callout, as docs/protocol.md tells operators to configure.
func externalNATS(t *testing.T, dataDir, sysPassword string) string {
	t.Helper()
	var conf strings.Builder
	if err := run(t.Context(), []string{"nats-config", "--data-dir", dataDir}, env(nil), &conf, os.Stderr); err != nil {
		t.Fatal(err)
	}
	auth := conf.String()
	if sysPassword != "" {
		withUser := strings.Replace(auth, "SYS {}", `SYS { users: [ { user: "kezd-sys", password: "`+sysPassword+`" } ] }`, 1)
		if withUser == auth {
			t.Fatal("nats-config has no empty SYS account to add a user to")
		}
		// The system user bypasses the callout, as kezd's own users do.
		withBypass := strings.Replace(withUser, "auth_users: [ ", `auth_users: [ "kezd-sys", `, 1)
		if withBypass == withUser {
			t.Fatal("nats-config has no auth_users list to add the system user to")
		}
		auth = withBypass
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "auth.conf"), []byte(auth), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nats.conf"), []byte("listen: 127.0.0.1:-1\ninclude \"auth.conf\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startNATSServer(t, filepath.Join(dir, "nats.conf"))
}

// With an external nats-server and a system-account user, a rotation
// disconnects the old key's NATS logins through the system account's KICK,
// and the old key cannot log in again. The time is logged.
func TestExternalNATSRevocation(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsURL := externalNATS(t, dataDir, "sys-secret")
	s := startServe(t, "--data-dir", dataDir, "--nats-url", natsURL,
		"--nats-system-user", "kezd-sys", "--nats-system-password", "sys-secret")
	ctx := t.Context()
	c, err := client.New(s.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	alice := kezdtest.Register(t, ctx, c, "alice")
	_, stream := streamFrom(t, "SSE stream", s.HTTPURL, alice, -1)
	sub := natsSession(t, "NATS subscriber on the external server", natsURL, alice)

	next, err := envelope.Generate("alice")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := c.Rotate(ctx, alice, next); err != nil {
		t.Fatal(err)
	}
	for _, sess := range []session{stream, sub} {
		t.Logf("external NATS revocation: %s ended %v after the rotation request", sess.name, sess.wait(t, start).Round(time.Millisecond))
	}
	wantNATSRefused(t, natsURL, alice)
	nc, err := client.ConnectNATS(natsURL, next)
	if err != nil {
		t.Fatalf("NATS login with the new key: %v", err)
	}
	nc.Close()
}
