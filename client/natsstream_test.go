package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
)

func seqsOf(ms []client.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func upTo(n int64) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64(i + 1)
	}
	return out
}

// TestStreamNATSResumesAcrossRestart: over kezd's own NATS, through a
// restart during which messages are stored and published to no one, the
// NATS stream delivers everything exactly once, in order: what it missed
// comes from the store when its connection is back.
func TestStreamNATSResumesAcrossRestart(t *testing.T) {
	t.Parallel()
	for _, be := range []struct {
		name string
		cfg  func(t *testing.T) kezdtest.Config
	}{
		{"sqlite", func(*testing.T) kezdtest.Config { return kezdtest.Config{} }},
		{"postgres", func(t *testing.T) kezdtest.Config { return kezdtest.Config{DatabaseURL: pgtest.NewDatabase(t)} }},
	} {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			srv := kezdtest.Start(t, be.cfg(t))
			ctx, c, alice, bob := aliceAndBob(t, srv)
			send := func(from, to int) {
				t.Helper()
				for i := from; i <= to; i++ {
					if _, err := c.Send(ctx, alice, "bob", fmt.Appendf(nil, "m%d", i)); err != nil {
						t.Fatalf("send m%d: %v", i, err)
					}
				}
			}
			reconnected := make(chan struct{}, 10)
			// A long reconnect wait: the sends after the restart happen
			// while the connection is still down, so only the store can
			// bring them.
			nc, err := client.ConnectNATS(srv.NATSURL, bob, nats.MaxReconnects(-1), nats.ReconnectWait(2*time.Second),
				nats.ReconnectJitter(0, 0), nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			send(1, 3) // the backlog

			col := newCollector()
			sctx, cancel := context.WithCancel(ctx)
			ended := make(chan error, 1)
			go func() {
				ended <- c.StreamNATS(sctx, nc, bob, client.NATSStreamOptions{Recheck: time.Hour},
					func(m client.Message) error { col.msgs <- m; return nil })
			}()
			if got := seqsOf(col.take(t, 3)); !slices.Equal(got, upTo(3)) {
				t.Fatalf("backlog seqs %v, want %v", got, upTo(3))
			}
			send(4, 6) // live
			col.take(t, 3)

			srv.Restart()
			send(7, 9) // NATS is still reconnecting: published to no one
			select {
			case <-reconnected:
			case <-ctx.Done():
				t.Fatal("NATS never reconnected")
			}
			more := col.take(t, 3) // from the store, after the reconnect
			send(10, 12)
			more = append(more, col.take(t, 3)...)
			cancel()
			if err := <-ended; !errors.Is(err, context.Canceled) {
				t.Fatalf("StreamNATS ended with %v", err)
			}
			if got, want := seqsOf(more), []int64{7, 8, 9, 10, 11, 12}; !slices.Equal(got, want) {
				t.Fatalf("after the restart seqs %v, want %v", got, want)
			}
			for i, m := range more {
				o, err := c.Open(ctx, bob, m)
				if err != nil || string(o.Plaintext) != fmt.Sprintf("m%d", i+7) {
					t.Fatalf("message %d: %+v %v", m.Seq, o, err)
				}
			}
			select {
			case m := <-col.msgs:
				t.Fatalf("extra message %d", m.Seq)
			default:
			}
		})
	}
}

// TestStreamNATSFillsGapsAndDropsRepeats: NATS brings seq 3 before 1 and
// 2 (another instance published it first), then repeats. The store here
// is kezd's; the NATS is a server of the test's own, so that it can publish
// in any order.
func TestStreamNATSFillsGapsAndDropsRepeats(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	for i := 1; i <= 4; i++ {
		if _, err := c.Send(ctx, alice, "bob", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	page, err := c.Poll(ctx, bob, client.PollOptions{})
	if err != nil || len(page.Messages) != 4 {
		t.Fatalf("poll: %v, %+v", err, page)
	}
	stored := page.Messages

	nc, err := nats.Connect(kezdtest.StartNATS(t))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	pub := func(i int) {
		t.Helper()
		m := stored[i-1]
		data := fmt.Appendf(nil, `{"seq":%d,"from":%q,"to":%q,"id":%q,"envelope":%s,"sent_at":%q}`,
			m.Seq, m.From, m.To, m.ID, m.Envelope, m.SentAt.Format(time.RFC3339Nano))
		msg := &nats.Msg{Subject: protocol.InboxPrefix + "bob", Data: data,
			Header: nats.Header{protocol.SeqHeader: {strconv.FormatInt(m.Seq, 10)}}}
		if err := nc.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}

	col := newCollector()
	// From now, so that the start reads nothing from the store: seq 1,
	// the first published, is the cursor.
	live := make(chan struct{})
	goStream(t, ctx, func(ctx context.Context) error {
		return c.StreamNATS(ctx, nc, bob, client.NATSStreamOptions{Since: client.FromNow, Recheck: time.Hour, OnLive: func() { close(live) }},
			func(m client.Message) error {
				col.msgs <- m
				return nil
			})
	})
	select {
	case <-live:
	case <-time.After(30 * time.Second):
		t.Fatal("the NATS stream's subscription never reached the server")
	}
	pub(1) // the first published after the subscription: the cursor
	pub(4) // ahead of 2 and 3: the store fills them
	pub(3)
	pub(1) // repeats
	pub(4)
	got := col.take(t, 4)
	if !slices.Equal(seqsOf(got), upTo(4)) {
		t.Fatalf("seqs %v, want %v", seqsOf(got), upTo(4))
	}
	// Nothing more: the repeats were dropped.
	pub(2)
	select {
	case m := <-col.msgs:
		t.Fatalf("a repeat delivered: seq %d", m.Seq)
	case <-time.After(500 * time.Millisecond):
	}
}
