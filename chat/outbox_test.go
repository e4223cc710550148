package chat_test

import (
	"context"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/nats-io/nats.go"
)

// inboxSub subscribes to bob's inbox on b the way a native NATS client does.
func inboxSub(t *testing.T, b *broker.Broker) *nats.Subscription {
	t.Helper()
	nc, err := b.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync(protocol.InboxSubject("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return sub
}

// nextSeq waits for the next published message and returns its Kez-Seq.
func nextSeq(t *testing.T, sub *nats.Subscription, within time.Duration) int64 {
	t.Helper()
	m, err := sub.NextMsg(within)
	if err != nil {
		t.Fatalf("no publish within %s: %v", within, err)
	}
	seq, err := strconv.ParseInt(m.Header.Get(protocol.SeqHeader), 10, 64)
	if err != nil {
		t.Fatalf("publish without a valid Kez-Seq: %v", err)
	}
	return seq
}

// runOutbox runs svc's outbox loop for the rest of the test.
func runOutbox(t *testing.T, svc *chat.Service) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); svc.RunOutbox(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestStoredButNeverPublishedIsPublished: an instance committed a message
// and died before publishing it. A surviving instance publishes it within
// the bound, and only once.
func TestStoredButNeverPublishedIsPublished(t *testing.T) {
	for _, be := range teststore.Backends {
		t.Run(be.Name, func(t *testing.T) {
			db := openBackend(t, be)
			b := startBroker(t, broker.Config{})
			sub := inboxSub(t, b)
			// The dead instance: stored, never published, never confirmed.
			if _, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: "lost", Envelope: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			const after = 300 * time.Millisecond
			survivor := chat.New(chat.Config{RepublishAfter: after}, db, b, b, slog.New(slog.DiscardHandler))
			runOutbox(t, survivor)
			start := time.Now()
			if seq := nextSeq(t, sub, 10*time.Second); seq != 1 {
				t.Fatalf("survivor published seq %d, want 1", seq)
			}
			if took := time.Since(start); took > 3*after+time.Second {
				t.Errorf("republished after %s, want within about %s", took, 3*after/2)
			}
			// Swept means confirmed: several sweeps later it has not come again.
			if m, err := sub.NextMsg(4 * after); err == nil {
				t.Errorf("a second publish after the sweep: Kez-Seq %s", m.Header.Get(protocol.SeqHeader))
			}
			if n := survivor.Republished(); n != 1 {
				t.Errorf("Republished() = %d, want 1", n)
			}
		})
	}
}

// TestRetryOfUnconfirmedPublishes: the client retried through another
// instance a send whose first instance stored it and died. The retry is a
// duplicate, and it publishes the message at once.
func TestRetryOfUnconfirmedPublishes(t *testing.T) {
	for _, be := range teststore.Backends {
		t.Run(be.Name, func(t *testing.T) {
			db := openBackend(t, be)
			b := startBroker(t, broker.Config{})
			sub := inboxSub(t, b)
			if _, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			// No sweep in reach: only the retry can publish it.
			other := chat.New(chat.Config{RepublishAfter: time.Hour}, db, b, b, slog.New(slog.DiscardHandler))
			r, err := other.Send(t.Context(), "alice", []byte(`{"to":"bob","id":"m1","envelope":{}}`))
			if err != nil || !r.Duplicate {
				t.Fatalf("retry = %+v, %v; want a duplicate", r, err)
			}
			if seq := nextSeq(t, sub, 5*time.Second); seq != 1 {
				t.Fatalf("retry published seq %d, want 1", seq)
			}
		})
	}
}

// TestConfirmedRetryDoesNotRepeat: once an instance has confirmed a
// publish, a retry of the send publishes nothing again.
func TestConfirmedRetryDoesNotRepeat(t *testing.T) {
	for _, be := range teststore.Backends {
		t.Run(be.Name, func(t *testing.T) {
			db := openBackend(t, be)
			b := startBroker(t, broker.Config{})
			sub := inboxSub(t, b)
			svc := chat.New(chat.Config{RepublishAfter: time.Hour}, db, b, b, slog.New(slog.DiscardHandler))
			runOutbox(t, svc)
			send(t, svc, "m1")
			if seq := nextSeq(t, sub, 5*time.Second); seq != 1 {
				t.Fatalf("first publish is seq %d, want 1", seq)
			}
			// Wait for the confirmation: a retry stops being Pending.
			testwait.Until(t, "the publish of m1 to be confirmed", func() bool {
				a, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)})
				if err != nil {
					t.Fatal(err)
				}
				return !a.Pending
			})
			send(t, svc, "m1") // the retry
			send(t, svc, "m2")
			if seq := nextSeq(t, sub, 5*time.Second); seq != 2 {
				t.Errorf("after a confirmed retry the next publish is seq %d, want 2", seq)
			}
		})
	}
}
