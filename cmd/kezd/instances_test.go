package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/store/pgtest"
	"golang.org/x/sync/errgroup"
)

// TestTwoProcessesOnePostgres runs two kezd processes on one database and
// sends to one recipient through both at once: the recipient's inbox must be
// one gapless sequence holding every message exactly once.
func TestTwoProcessesOnePostgres(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	a := kezdtest.Start(t, kezdtest.Config{DatabaseURL: db})
	b := kezdtest.Start(t, kezdtest.Config{DatabaseURL: db})
	ctx := t.Context()
	ca, _ := client.New(a.URL)
	cb, _ := client.New(b.URL)

	alice := kezdtest.Register(t, ctx, ca, "alice")
	const senders, perSender = 6, 60
	ids := make([]*envelope.Identity, senders)
	for i := range ids {
		ids[i] = kezdtest.Register(t, ctx, cb, fmt.Sprintf("sender%d", i)) // registered via B, used on both
	}
	g, gctx := errgroup.WithContext(ctx)
	for i, id := range ids {
		c := ca
		if i%2 == 1 {
			c = cb
		}
		g.Go(func() error {
			for n := range perSender {
				env := fmt.Appendf(nil, `{"n":%d}`, n)
				if _, err := c.SendEnvelope(gctx, id, "alice", fmt.Sprintf("m-%d", n), env); err != nil {
					return fmt.Errorf("%s message %d: %w", id.Handle, n, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}

	seen := map[string]bool{}
	var next int64
	for {
		page, err := ca.Poll(context.WithoutCancel(ctx), alice, client.PollOptions{Since: next, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) == 0 {
			break
		}
		for _, m := range page.Messages {
			if m.Seq != next+1 {
				t.Fatalf("seq %d follows %d: gap or reorder", m.Seq, next)
			}
			next = m.Seq
			key := m.From + "/" + m.ID
			if seen[key] {
				t.Fatalf("%s stored twice", key)
			}
			seen[key] = true
		}
	}
	if want := senders * perSender; int(next) != want || len(seen) != want {
		t.Fatalf("inbox holds %d messages (last seq %d), want %d", len(seen), next, want)
	}
}
