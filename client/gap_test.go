package client_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
)

// TestGapsAfterDeleteThrough: bob's messages 1-3 are deleted
// (DELETE ?through=3) before he reads them. A poll, an SSE stream and a
// NATS stream from an older cursor each report the run he never got, once,
// before the message after it, and then deliver the rest; from a cursor at
// or past the run there is none.
func TestGapsAfterDeleteThrough(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	for i := 1; i <= 5; i++ {
		if _, err := c.Send(ctx, alice, "bob", fmt.Appendf(nil, "m%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := c.DeleteThrough(ctx, bob, 3); err != nil || d.Deleted != 3 {
		t.Fatalf("delete through 3: %+v, %v", d, err)
	}

	for _, tc := range []struct {
		since int64
		gap   *client.Gap
		seqs  string
	}{
		{0, &client.Gap{First: 1, Last: 3}, "[4 5]"},
		{2, &client.Gap{First: 3, Last: 3}, "[4 5]"},
		{3, nil, "[4 5]"},
		{4, nil, "[5]"},
	} {
		t.Run(fmt.Sprintf("poll since %d", tc.since), func(t *testing.T) {
			p, err := c.Poll(ctx, bob, client.PollOptions{Since: tc.since})
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(p.Gap) != fmt.Sprint(tc.gap) || fmt.Sprint(seqsOf(p.Messages)) != tc.seqs {
				t.Fatalf("gap %v, seqs %v; want gap %v, seqs %s", p.Gap, seqsOf(p.Messages), tc.gap, tc.seqs)
			}
		})
	}

	// A follower from since 1 sees, in order, the gap 2-3 once, then every
	// message from 4 on, up to one stored while it follows.
	follow := func(t *testing.T, run func(ctx context.Context, onGap func(client.Gap), deliver func(client.Message) error) error) {
		t.Helper()
		seen := make(chan string, 20)
		goStream(t, ctx, func(ctx context.Context) error {
			return run(ctx,
				func(g client.Gap) { seen <- fmt.Sprintf("gap %d-%d", g.First, g.Last) },
				func(m client.Message) error { seen <- fmt.Sprint(m.Seq); return nil })
		})
		sent, err := c.Send(ctx, alice, "bob", []byte("while following"))
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"gap 2-3"}
		for seq := int64(4); seq <= sent.Seq; seq++ {
			want = append(want, fmt.Sprint(seq))
		}
		var got []string
		for len(got) < len(want) {
			select {
			case s := <-seen:
				got = append(got, s)
			case <-ctx.Done():
				t.Fatalf("saw %v, then nothing; want %v", got, want)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("saw %v, want %v", got, want)
		}
	}
	t.Run("sse stream", func(t *testing.T) {
		follow(t, func(ctx context.Context, onGap func(client.Gap), deliver func(client.Message) error) error {
			return c.Stream(ctx, bob, client.StreamOptions{Since: 1, OnGap: onGap}, deliver)
		})
	})
	t.Run("nats stream", func(t *testing.T) {
		nc, err := client.ConnectNATS(srv.NATSURL, bob)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		follow(t, func(ctx context.Context, onGap func(client.Gap), deliver func(client.Message) error) error {
			return c.StreamNATS(ctx, nc, bob, client.NATSStreamOptions{Since: 1, OnGap: onGap, Recheck: time.Hour}, deliver)
		})
	})
}

// TestPollRefusesImpossibleReset: a reset whose oldest message is at or
// before since, or after the first message returned, describes no gap; the
// poll fails rather than tell the user something false.
func TestPollRefusesImpossibleReset(t *testing.T) {
	t.Parallel()
	msg := `{"seq":5,"from":"alice","to":"bob","id":"m5","envelope":{},"sent_at":"2026-01-01T00:00:00Z"}`
	for _, tc := range []struct {
		name, body string
		ok         bool
	}{
		{"oldest is the first returned", `{"messages":[` + msg + `],"next":5,"reset":{"oldest":5}}`, true},
		{"oldest at since", `{"messages":[` + msg + `],"next":5,"reset":{"oldest":2}}`, false},
		{"oldest after the first returned", `{"messages":[` + msg + `],"next":5,"reset":{"oldest":6}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(tc.body))
			}))
			t.Cleanup(srv.Close)
			c, err := client.New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			bob, err := envelope.Generate("bob")
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.Poll(t.Context(), bob, client.PollOptions{Since: 2})
			if tc.ok {
				if err != nil || p.Gap == nil || *p.Gap != (client.Gap{First: 3, Last: 4}) {
					t.Fatalf("got %+v, %v; want gap 3-4", p, err)
				}
			} else if err == nil {
				t.Fatalf("accepted %s: gap %v", tc.body, p.Gap)
			}
		})
	}
}
