package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
)

// TestStreamDetectsSilence: a server that hangs (SIGSTOP) keeps the
// stream's connection open but silent. With pings every 200 ms, a stream
// with a 1 s silence bound gives up on the connection and reconnects,
// reporting ErrSilent, long before the server comes back; once it is back,
// the stream goes on exactly once, in order.
func TestStreamDetectsSilence(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{Args: []string{"--sse-ping", "200ms"}})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	col := newCollector()
	silent := make(chan time.Time, 10)
	goStream(t, ctx, func(ctx context.Context) error {
		return c.Stream(ctx, bob, client.StreamOptions{
			Silence: time.Second,
			OnState: func(s client.State, err error) {
				col.states <- s
				if errors.Is(err, client.ErrSilent) {
					silent <- time.Now()
				}
			},
		}, func(m client.Message) error { col.msgs <- m; return nil })
	})
	col.waitState(t, client.StateLive)
	if _, err := c.Send(ctx, alice, "bob", []byte("before")); err != nil {
		t.Fatal(err)
	}
	col.take(t, 1)
	pingsThenFreeze(t, srv, silent, 3*time.Second, 15*time.Second, "about 1 s")
	srv.Thaw()
	if _, err := c.Send(ctx, alice, "bob", []byte("after")); err != nil {
		t.Fatal(err)
	}
	got := col.take(t, 1)
	if !slices.Equal(seqsOf(got), []int64{2}) {
		t.Fatalf("after the freeze got seqs %v, want [2]", seqsOf(got))
	}
}

// TestStreamSilenceFollowsStatedPing: with no Silence option, the bound is
// 2.5 of the ping interval kezd states on the stream (Kez-Ping-Interval),
// here 200 ms: a frozen server is left within about half a second, not
// after DefaultSilence, and pings alone never trip it.
func TestStreamSilenceFollowsStatedPing(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{Args: []string{"--sse-ping", "200ms"}})
	ctx, c, _, bob := aliceAndBob(t, srv)
	col := newCollector()
	silent := make(chan time.Time, 10)
	goStream(t, ctx, func(ctx context.Context) error {
		return c.Stream(ctx, bob, client.StreamOptions{
			OnState: func(s client.State, err error) {
				col.states <- s
				if errors.Is(err, client.ErrSilent) {
					silent <- time.Now()
				}
			},
		}, func(m client.Message) error { col.msgs <- m; return nil })
	})
	col.waitState(t, client.StateLive)
	pingsThenFreeze(t, srv, silent, 5*time.Second, 20*time.Second, fmt.Sprintf("about 0.5 s, not DefaultSilence (%s)", client.DefaultSilence))
}

// pingsThenFreeze checks a live stream's silence detection, silent being
// where its ErrSilent reconnects are reported: two seconds of a live
// connection bring pings and nothing else, and no reconnect for silence;
// then srv is frozen (and thawed at the end of the test), and one must come
// within bound (want says what is expected), waiting at most wait.
func pingsThenFreeze(t *testing.T, srv *kezdtest.Server, silent <-chan time.Time, bound, wait time.Duration, want string) {
	t.Helper()
	select {
	case <-silent:
		t.Fatal("a connection that pings was taken for silent")
	case <-time.After(2 * time.Second):
	}
	srv.Freeze()
	t.Cleanup(srv.Thaw)
	frozen := time.Now()
	select {
	case at := <-silent:
		if d := at.Sub(frozen); d > bound {
			t.Errorf("silence detected %s after the freeze, want %s", d, want)
		}
	case <-time.After(wait):
		t.Fatalf("no reconnect for silence within %s of the freeze, want %s", wait, want)
	}
}
