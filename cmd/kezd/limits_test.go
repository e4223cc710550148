package main

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
)

// Rate limits hold for the deployment: two instances on one Postgres admit
// what one would, for registrations per IP and for sends per sender; with
// --rate-limits off neither limit is applied.
func TestRateLimitsHoldForTheDeployment(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		args       []string
		regs, sent int // what the deployment admits of 8 registrations and 30 sends
	}{
		// Buckets of 4 registrations and 10 sends that refill too slowly
		// to matter during the test; each instance leases a token at a time.
		{"on", []string{"--rate-registrations", "4/1000h", "--rate-sends", "10/1000h"}, 4, 10},
		{"off", []string{"--rate-registrations", "4/1000h", "--rate-sends", "10/1000h", "--rate-limits", "off"}, 8, 30},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			db := pgtest.NewDatabase(t)
			args := append([]string{"--database-url", db}, c.args...)
			a, b := startServe(t, args...), startServe(t, args...)
			ctx := t.Context()
			// One attempt each: the client would retry a 429 after a backoff.
			ca, _ := client.New(a.HTTPURL, client.WithAttempts(1))
			cb, _ := client.New(b.HTTPURL, client.WithAttempts(1))
			clients := []*client.Client{ca, cb}

			var ids []*envelope.Identity
			for i := range 8 {
				id, err := envelope.Generate(fmt.Sprintf("u%d", i))
				if err != nil {
					t.Fatal(err)
				}
				_, err = clients[i%2].Register(ctx, id)
				switch {
				case err == nil:
					ids = append(ids, id)
				case client.IsCode(err, protocol.CodeRateLimited):
				default:
					t.Fatalf("register %d: %v", i, err)
				}
			}
			if len(ids) != c.regs {
				t.Fatalf("two instances admitted %d registrations, want %d", len(ids), c.regs)
			}

			sent := 0
			for i := range 30 {
				_, err := clients[i%2].Send(ctx, ids[0], ids[1].Handle, []byte("hi"))
				switch {
				case err == nil:
					sent++
				case client.IsCode(err, protocol.CodeRateLimited):
				default:
					t.Fatalf("send %d: %v", i, err)
				}
			}
			// One lease may be stranded per instance; with 10/8 tokens per
			// lease that is at most one send each.
			if sent > c.sent || sent < c.sent-2 {
				t.Fatalf("two instances admitted %d sends, want %d", sent, c.sent)
			}
		})
	}
}

// Refused NATS logins and failed HTTP authentications take from one bucket
// per client IP (defect: NATS logins took from none): two logins with an
// unregistered key empty a bucket of 2, and then alice's own NATS login and
// her signed HTTP poll from the same address are both refused.
func TestFailedNATSLoginsShareHTTPLimit(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--rate-failed-auth", "2/1000h")
	ctx := t.Context()
	c, _ := client.New(s.HTTPURL, client.WithAttempts(1))
	alice := kezdtest.Register(t, ctx, c, "alice")
	if _, err := c.Poll(ctx, alice, client.PollOptions{}); err != nil {
		t.Fatalf("poll before any failure: %v", err)
	}
	stranger, err := envelope.Generate("mallory")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if nc, err := client.ConnectNATS(s.NATSURL, stranger, nats.NoReconnect()); err == nil {
			nc.Close()
			t.Fatalf("login %d with an unregistered key was accepted", i)
		}
	}
	if nc, err := client.ConnectNATS(s.NATSURL, alice, nats.NoReconnect()); err == nil {
		nc.Close()
		t.Fatal("alice's NATS login was accepted from an address past its failed-authentication limit")
	}
	if _, err := c.Poll(ctx, alice, client.PollOptions{}); !client.IsCode(err, protocol.CodeRateLimited) {
		t.Fatalf("poll after two failed NATS logins: %v, want rate_limited", err)
	}
}
