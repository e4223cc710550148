package client_test

import (
	"errors"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
)

// The three lifecycle calls, and what a stream and Open make of them: a
// stream whose key is rotated away ends with ErrKeyRevoked instead of
// reconnecting, and a message sealed before its sender rotated still opens.
func TestLifecycleCalls(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *kezdtest.Server) {
		ctx, c, alice, bob := aliceAndBob(t, srv)
		if _, err := c.Send(ctx, bob, "alice", []byte("sealed before bob rotated")); err != nil {
			t.Fatal(err)
		}

		col := newCollector()
		ended := make(chan error, 1)
		go func() {
			ended <- c.Stream(ctx, alice, client.StreamOptions{Since: 0, OnState: func(s client.State, _ error) { col.states <- s }},
				func(m client.Message) error { col.msgs <- m; return nil })
		}()
		col.waitState(t, client.StateLive)
		first := col.take(t, 1)[0]

		// Bob rotates; his earlier message still verifies, with the key he had.
		bob2, err := envelope.Generate("bob")
		if err != nil {
			t.Fatal(err)
		}
		h, err := c.Rotate(ctx, bob, bob2)
		if err != nil || h.SigningKey != bob2.SigningKeyHex() {
			t.Fatalf("Rotate = %+v, %v", h, err)
		}
		o, err := c.Open(ctx, alice, first)
		if err != nil || string(o.Plaintext) != "sealed before bob rotated" {
			t.Fatalf("Open of a message sealed before the sender rotated: %v", err)
		}
		if h, err := c.LookupAt(ctx, "bob", first.SentAt); err != nil || h.SigningKey != bob.SigningKeyHex() {
			t.Fatalf("LookupAt(sent_at) = %+v, %v; want bob's old key", h, err)
		}
		_, err = c.Rotate(ctx, bob, bob2)
		kezdtest.WantCode(t, err, protocol.CodeBadSignature)

		// Alice rotates: her stream ends, distinctly.
		alice2, err := envelope.Generate("alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Rotate(ctx, alice, alice2); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-ended:
			if !errors.Is(err, client.ErrKeyRevoked) || !client.IsCode(err, protocol.CodeBadSignature) {
				t.Fatalf("stream ended with %v, want ErrKeyRevoked (bad_signature)", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("the stream did not end after its key was rotated")
		}

		// Delete through: seqs go on.
		for _, text := range []string{"two", "three"} {
			if _, err := c.Send(ctx, bob2, "alice", []byte(text)); err != nil {
				t.Fatal(err)
			}
		}
		d, err := c.DeleteThrough(ctx, alice2, 2)
		if err != nil || d.Deleted != 2 || d.Oldest == nil || *d.Oldest != 3 {
			t.Fatalf("DeleteThrough = %+v, %v; want 2 deleted, oldest 3", d, err)
		}
		p, err := c.Poll(ctx, alice2, client.PollOptions{})
		if err != nil || len(p.Messages) != 1 || p.Messages[0].Seq != 3 {
			t.Fatalf("poll after delete-through: %+v, %v", p, err)
		}
		if o, err := c.Open(ctx, alice2, p.Messages[0]); err != nil || string(o.Plaintext) != "three" {
			t.Fatalf("Open with the new keys: %v", err)
		}

		// Delete the account.
		del, err := c.DeleteAccount(ctx, alice2)
		if err != nil || del.Handle != "alice" {
			t.Fatalf("DeleteAccount = %+v, %v", del, err)
		}
		_, err = c.Lookup(ctx, "alice")
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)
		_, err = c.Send(ctx, bob2, "alice", []byte("gone"))
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)
		_, err = c.Register(ctx, alice2)
		kezdtest.WantCode(t, err, protocol.CodeHandleTaken)
	})
}
