package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
)

// The two transports are one service: what is sent over one is delivered on
// the other, in the same per-recipient seq order.

// TestNATSSendReachesSSEStream: alice sends with a request on
// kez.chat.send.alice; bob, following his inbox over Server-Sent Events,
// receives it with the seq the NATS reply named.
func TestNATSSendReachesSSEStream(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *kezdtest.Server) {
		ctx, c, alice, bob := aliceAndBob(t, srv)

		col := newCollector()
		ended := make(chan error, 1)
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			ended <- c.Stream(sctx, bob, client.StreamOptions{
				Since:   client.FromNow,
				OnState: func(s client.State, _ error) { col.states <- s },
			}, func(m client.Message) error { col.msgs <- m; return nil })
		}()
		col.waitState(t, client.StateLive)

		anc, err := client.ConnectNATS(srv.NATSURL, alice)
		if err != nil {
			t.Fatal(err)
		}
		defer anc.Close()
		sent, err := c.SendNATS(ctx, anc, alice, "bob", []byte("from nats to sse"))
		if err != nil {
			t.Fatal(err)
		}
		if sent.Seq != 1 || sent.To != "bob" || sent.Duplicate {
			t.Fatalf("send reply: %+v", sent)
		}

		m := col.take(t, 1)[0]
		cancel()
		if err := <-ended; !errors.Is(err, sctx.Err()) {
			t.Fatalf("stream ended with %v", err)
		}
		if m.Seq != sent.Seq || m.From != "alice" || m.ID != sent.ID {
			t.Fatalf("streamed %+v, reply %+v", m, sent)
		}
		o, err := c.Open(ctx, bob, m)
		if err != nil || string(o.Plaintext) != "from nats to sse" {
			t.Fatalf("open: %+v, %v", o, err)
		}
	})
}

// TestHTTPSendReachesNATSInbox: alice, logged in to NATS with her kez key,
// subscribes to kez.chat.inbox.alice and receives what bob sent over HTTP,
// as the stored message JSON with a Kez-Seq header; she may not subscribe
// to bob's inbox.
func TestHTTPSendReachesNATSInbox(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *kezdtest.Server) {
		ctx, c, alice, bob := aliceAndBob(t, srv)

		asyncErrs := make(chan error, 10)
		anc, err := client.ConnectNATS(srv.NATSURL, alice,
			nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { asyncErrs <- err }))
		if err != nil {
			t.Fatal(err)
		}
		defer anc.Close()
		inbox := make(chan *nats.Msg, 10)
		if _, err := anc.ChanSubscribe(protocol.InboxPrefix+"alice", inbox); err != nil {
			t.Fatal(err)
		}
		if err := anc.FlushWithContext(ctx); err != nil {
			t.Fatal(err)
		}

		sent, err := c.Send(ctx, bob, "alice", []byte("from http to nats"))
		if err != nil {
			t.Fatal(err)
		}
		var msg *nats.Msg
		select {
		case msg = <-inbox:
		case <-ctx.Done():
			t.Fatal("nothing on kez.chat.inbox.alice")
		}
		var m client.Message
		if err := json.Unmarshal(msg.Data, &m); err != nil {
			t.Fatalf("inbox data %q: %v", msg.Data, err)
		}
		if m.Seq != sent.Seq || m.From != "bob" || m.To != "alice" || m.ID != sent.ID {
			t.Fatalf("got %+v, sent %+v", m, sent)
		}
		if got := msg.Header.Get("Kez-Seq"); got != strconv.FormatInt(sent.Seq, 10) {
			t.Fatalf("Kez-Seq %q, want %d", got, sent.Seq)
		}
		o, err := c.Open(ctx, alice, m)
		if err != nil || string(o.Plaintext) != "from http to nats" || o.From != "bob" {
			t.Fatalf("open: %+v, %v", o, err)
		}

		// Another handle's inbox is not alice's to read.
		if _, err := anc.Subscribe(protocol.InboxPrefix+"bob", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-asyncErrs:
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatalf("subscribe to bob's inbox: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("subscribing to bob's inbox was not refused")
		}
	})
}
