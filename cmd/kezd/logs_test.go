package main

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Refused NATS logins are summarised in the log, not logged one by one
// (defect: 300 refused logins wrote 900 lines: the callout's, and two of
// the embedded server's, for each).
func TestRefusedLoginsDoNotFloodTheLog(t *testing.T) {
	t.Parallel()
	s, logs := startServeLogs(t, "--log-level", "info")
	const refused = 60
	for range refused {
		kp, err := nkeys.CreateUser()
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := kp.PublicKey()
		nc, err := nats.Connect(s.NATSURL, nats.Nkey(pub, kp.Sign), nats.MaxReconnects(0), nats.NoReconnect())
		if err == nil {
			nc.Close()
			t.Fatal("a login with an unregistered key was accepted")
		}
	}
	lines := 0
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=INFO") || strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			if strings.Contains(strings.ToLower(l), "auth") || strings.Contains(l, "refused") {
				lines++
			}
		}
	}
	if lines > 3 {
		t.Fatalf("%d refused logins wrote %d log lines about them, want a summary of at most 3:\n%s", refused, lines, logs)
	}
}
