package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// backends runs f against kezd on SQLite and on Postgres.
func backends(t *testing.T, f func(t *testing.T, srv *kezdtest.Server)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		f(t, kezdtest.Start(t, kezdtest.Config{}))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		f(t, kezdtest.Start(t, kezdtest.Config{DatabaseURL: pgtest.NewDatabase(t)}))
	})
}

func newClient(t *testing.T, srv *kezdtest.Server) *client.Client {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	c, err := client.New(srv.URL,
		client.WithBackoff(client.Backoff{Min: 10 * time.Millisecond, Max: 200 * time.Millisecond}),
		client.WithWebFingerBase(func(domain string) string {
			if domain == u.Host {
				return srv.URL
			}
			return "https://" + domain
		}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// aliceAndBob is the usual start of a test: a client of srv, and alice
// and bob registered through it.
func aliceAndBob(t *testing.T, srv *kezdtest.Server) (context.Context, *client.Client, *envelope.Identity, *envelope.Identity) {
	t.Helper()
	ctx := ctxFor(t)
	c := newClient(t, srv)
	return ctx, c, kezdtest.Register(t, ctx, c, "alice"), kezdtest.Register(t, ctx, c, "bob")
}

func TestClientCalls(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *kezdtest.Server) {
		ctx, c, alice, bob := aliceAndBob(t, srv)

		// Register, and its conflicts.
		_, err := c.Register(ctx, alice)
		kezdtest.WantCode(t, err, protocol.CodeHandleTaken)
		again, _ := envelope.Generate("alice2")
		again.Signing = alice.Signing
		_, err = c.Register(ctx, again)
		kezdtest.WantCode(t, err, protocol.CodeKeyTaken)

		// Lookup and WebFinger.
		h, err := c.Lookup(ctx, "bob")
		if err != nil || h.SigningKey != bob.SigningKeyHex() || h.EncryptionKey != bob.EncryptionKeyHex() {
			t.Fatalf("lookup bob: %+v, %v", h, err)
		}
		_, err = c.Lookup(ctx, "nobody")
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)
		_, err = c.Lookup(ctx, "Bad.Handle")
		kezdtest.WantCode(t, err, protocol.CodeInvalidHandle)
		host := srv.URL[len("http://"):]
		a, err := c.Resolve(ctx, "bob@"+host)
		if err != nil {
			t.Fatalf("resolve: %v", err)
		}
		if a.SigningKey != bob.SigningKeyHex() || a.EncryptionKey != bob.EncryptionKeyHex() || a.Inbox == "" || a.Stream == "" {
			t.Fatalf("resolve: %+v", a)
		}
		_, err = c.Resolve(ctx, "nobody@"+host)
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)

		// Send, idempotently.
		s1, err := c.Send(ctx, alice, "bob", []byte("hello bob"))
		if err != nil || s1.Seq != 1 || s1.Duplicate {
			t.Fatalf("send: %+v, %v", s1, err)
		}
		env, err := c.Seal(ctx, alice, "bob", "fixed-id", []byte("once"))
		if err != nil {
			t.Fatal(err)
		}
		s2, err := c.SendEnvelope(ctx, alice, "bob", "fixed-id", env)
		if err != nil || s2.Duplicate {
			t.Fatalf("send: %+v, %v", s2, err)
		}
		s3, err := c.SendEnvelope(ctx, alice, "bob", "fixed-id", env)
		if err != nil || !s3.Duplicate || s3.Seq != s2.Seq {
			t.Fatalf("retry: %+v, %v", s3, err)
		}
		_, err = c.Send(ctx, alice, "nobody", []byte("x"))
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)

		// Poll and open.
		p, err := c.Poll(ctx, bob, client.PollOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Messages) != 2 || p.Next != 2 {
			t.Fatalf("poll: %+v", p)
		}
		for i, want := range []string{"hello bob", "once"} {
			o, err := c.Open(ctx, bob, p.Messages[i])
			if err != nil || string(o.Plaintext) != want || o.From != "alice" {
				t.Fatalf("open %d: %+v, %v", i, o, err)
			}
		}
		// A message relabelled by the server is refused.
		m := p.Messages[0]
		m.ID = "other"
		if _, err := c.Open(ctx, bob, m); err == nil {
			t.Fatal("opened a relabelled message")
		}

		// Long-poll: empty at the deadline, woken by a message.
		p, err = c.Poll(ctx, bob, client.PollOptions{Since: 2, Wait: time.Second})
		if err != nil || len(p.Messages) != 0 || p.Next != 2 {
			t.Fatalf("long-poll timeout: %+v, %v", p, err)
		}
		got := make(chan *client.Page, 1)
		go func() {
			p, err := c.Poll(ctx, bob, client.PollOptions{Since: 2, Wait: 30 * time.Second})
			if err != nil {
				t.Error(err)
			}
			got <- p
		}()
		if _, err := c.Send(ctx, alice, "bob", []byte("wake up")); err != nil {
			t.Fatal(err)
		}
		if p := <-got; p == nil || len(p.Messages) != 1 || p.Messages[0].Seq != 3 {
			t.Fatalf("long-poll: %+v", p)
		}

		// Credentials the server refuses.
		forged, _ := envelope.Generate("bob")
		_, err = c.Poll(ctx, forged, client.PollOptions{})
		kezdtest.WantCode(t, err, protocol.CodeBadSignature)
		stranger, _ := envelope.Generate("stranger")
		_, err = c.Poll(ctx, stranger, client.PollOptions{})
		kezdtest.WantCode(t, err, protocol.CodeUnauthorized)
		stale, _ := client.New(srv.URL, client.WithClock(func() time.Time { return time.Now().Add(-time.Hour) }))
		_, err = stale.Poll(ctx, bob, client.PollOptions{})
		kezdtest.WantCode(t, err, protocol.CodeStaleTimestamp)
	})
}

// collector gathers streamed messages and states for a test to wait on.
type collector struct {
	msgs   chan client.Message
	states chan client.State
}

// goStream runs follow (a Stream or StreamNATS) on a goroutine of its own
// until the test ends, then ends it and waits for it to return.
func goStream(t *testing.T, ctx context.Context, follow func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = follow(ctx) // it ends with ctx; what it saw is the test's to check
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

func newCollector() *collector {
	return &collector{msgs: make(chan client.Message, 100), states: make(chan client.State, 100)}
}

func (c *collector) waitState(t *testing.T, want client.State) {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case s := <-c.states:
			if s == want {
				return
			}
		case <-timeout:
			t.Fatalf("no %s state", want)
		}
	}
}

func (c *collector) take(t *testing.T, n int) []client.Message {
	t.Helper()
	var out []client.Message
	timeout := time.After(60 * time.Second)
	for len(out) < n {
		select {
		case m := <-c.msgs:
			out = append(out, m)
		case <-timeout:
			t.Fatalf("got %d of %d messages", len(out), n)
		}
	}
	return out
}

func TestStreamResumesAcrossRestart(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, srv *kezdtest.Server) {
		ctx, c, alice, bob := aliceAndBob(t, srv)
		send := func(from, to int) {
			t.Helper()
			for i := from; i <= to; i++ {
				if _, err := c.Send(ctx, alice, "bob", fmt.Appendf(nil, "m%d", i)); err != nil {
					t.Fatalf("send m%d: %v", i, err)
				}
			}
		}
		send(1, 3) // backlog before the stream opens

		col := newCollector()
		sctx, cancel := context.WithCancel(ctx)
		ended := make(chan error, 1)
		go func() {
			ended <- c.Stream(sctx, bob, client.StreamOptions{
				Since:   0,
				OnState: func(s client.State, _ error) { col.states <- s },
			}, func(m client.Message) error { col.msgs <- m; return nil })
		}()
		col.waitState(t, client.StateConnecting)
		col.waitState(t, client.StateLive)
		send(4, 6) // live

		srv.Restart()
		col.waitState(t, client.StateReconnecting)
		send(7, 9) // while the stream reconnects, or after: either way once
		col.waitState(t, client.StateLive)
		send(10, 12)

		got := col.take(t, 12)
		cancel()
		if err := <-ended; err != context.Canceled {
			t.Fatalf("stream ended with %v", err)
		}
		var seqs []int64
		for i, m := range got {
			seqs = append(seqs, m.Seq)
			o, err := c.Open(ctx, bob, m)
			if err != nil || string(o.Plaintext) != fmt.Sprintf("m%d", i+1) {
				t.Fatalf("message %d: %+v %v", i, o, err)
			}
		}
		if want := []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}; !slices.Equal(seqs, want) {
			t.Fatalf("seqs %v, want %v", seqs, want)
		}
		select {
		case m := <-col.msgs:
			t.Fatalf("extra message %d", m.Seq)
		default:
		}
	})
}

func TestStreamFromNow(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	if _, err := c.Send(ctx, alice, "bob", []byte("old")); err != nil {
		t.Fatal(err)
	}
	col := newCollector()
	goStream(t, ctx, func(ctx context.Context) error {
		return c.Stream(ctx, bob, client.StreamOptions{
			Since:   client.FromNow,
			OnState: func(s client.State, _ error) { col.states <- s },
		}, func(m client.Message) error { col.msgs <- m; return nil })
	})
	col.waitState(t, client.StateLive)
	if _, err := c.Send(ctx, alice, "bob", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if m := col.take(t, 1)[0]; m.Seq != 2 {
		t.Fatalf("got seq %d, want 2", m.Seq)
	}
}

func TestStreamRefusesForgedKey(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx := ctxFor(t)
	c := newClient(t, srv)
	kezdtest.Register(t, ctx, c, "bob")
	forged, _ := envelope.Generate("bob")
	err := c.Stream(ctx, forged, client.StreamOptions{}, func(client.Message) error { return nil })
	kezdtest.WantCode(t, err, protocol.CodeBadSignature)
}

func TestNATS(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx, c, alice, bob := aliceAndBob(t, srv)

	bnc, err := client.ConnectNATS(srv.NATSURL, bob)
	if err != nil {
		t.Fatal(err)
	}
	defer bnc.Close()
	got := make(chan client.Message, 10)
	if _, err := client.SubscribeInbox(bnc, "bob", func(m client.Message) { got <- m }); err != nil {
		t.Fatal(err)
	}
	if err := bnc.Flush(); err != nil {
		t.Fatal(err)
	}

	anc, err := client.ConnectNATS(srv.NATSURL, alice)
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	s, err := c.SendNATS(ctx, anc, alice, "bob", []byte("over nats"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, alice, "bob", []byte("over http")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"over nats", "over http"} {
		select {
		case m := <-got:
			o, err := c.Open(ctx, bob, m)
			if err != nil || string(o.Plaintext) != want {
				t.Fatalf("got %+v %v, want %q", o, err, want)
			}
			if want == "over nats" && m.Seq != s.Seq {
				t.Fatalf("seq %d, reply said %d", m.Seq, s.Seq)
			}
		case <-ctx.Done():
			t.Fatal("no message over NATS")
		}
	}

	// A handle that is not registered cannot log in.
	stranger, _ := envelope.Generate("stranger")
	if nc, err := client.ConnectNATS(srv.NATSURL, stranger); err == nil {
		nc.Close()
		t.Fatal("an unregistered key logged in")
	}
	// Errors come back typed.
	_, err = c.SendNATS(ctx, anc, alice, "nobody", []byte("x"))
	kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)
}

func TestEnvelopeJSONSurvives(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	raw := json.RawMessage(`{"b":1.50,"a":"<&>"}`)
	if _, err := c.SendEnvelope(ctx, alice, "bob", "raw-1", raw); err != nil {
		t.Fatal(err)
	}
	p, err := c.Poll(ctx, bob, client.PollOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Messages[0].Envelope) != string(raw) {
		t.Fatalf("envelope %s, want %s", p.Messages[0].Envelope, raw)
	}
	if _, err := c.Open(ctx, bob, p.Messages[0]); err == nil {
		t.Fatal("opened a non-envelope")
	}
}

// TestStreamCursorBeyondLatest: a client whose cursor is ahead of anything
// the server stores (the server was restored from an older backup) follows
// the server's ready and receives what is stored next.
func TestStreamCursorBeyondLatest(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	col := newCollector()
	goStream(t, ctx, func(ctx context.Context) error {
		return c.Stream(ctx, bob, client.StreamOptions{
			Since:   5,
			OnState: func(s client.State, _ error) { col.states <- s },
		}, func(m client.Message) error { col.msgs <- m; return nil })
	})
	col.waitState(t, client.StateLive)
	for range 3 {
		if _, err := c.Send(ctx, alice, "bob", []byte("after the restore")); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range col.take(t, 3) {
		if m.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.Seq)
		}
	}
}
