package client_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
)

// signature matches an Ed25519 signature in hex, or a stream's auth= value
// that was not redacted.
var signature = regexp.MustCompile(`[0-9a-f]{128}|auth=[^R&]`)

// firstReconnect runs a stream until its first reconnect and returns the
// error it reported then (or the error Stream returned, if it gave up).
// whenLive runs once the stream is live, if it gets there.
func firstReconnect(ctx context.Context, c *client.Client, as *envelope.Identity, whenLive func()) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	got := make(chan error, 1)
	ended := make(chan error, 1)
	go func() {
		ended <- c.Stream(ctx, as, client.StreamOptions{Since: client.FromNow, OnState: func(s client.State, err error) {
			switch s {
			case client.StateLive:
				if whenLive != nil {
					go whenLive()
				}
			case client.StateReconnecting:
				select {
				case got <- err:
				default:
				}
				cancel()
			}
		}}, func(client.Message) error { return nil })
	}()
	// The reconnect's error is sent before the cancel that ends Stream, so
	// once Stream has returned it is there if there was one; selecting on
	// both would sometimes take Stream's context.Canceled instead.
	err := <-ended
	select {
	case err := <-got:
		var re *client.ReconnectError
		if !errors.As(err, &re) || re.Delay <= 0 {
			return fmt.Errorf("reconnecting with %v (%T), want a *client.ReconnectError with its delay", err, err)
		}
		return err
	default:
		return err
	}
}

// TestErrorsCarryNoCredentials makes each kind of client error and checks
// that its text holds no signature: a stream's auth= value opens the inbox
// for as long as the server's skew window allows, and error texts end up in
// terminals, logs and bug reports.
func TestErrorsCarryNoCredentials(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{Args: []string{"--max-streams", "1"}})
	ctx, c, alice, bob := aliceAndBob(t, srv)
	// A load balancer in front: with kezd down it answers 502 itself.
	target, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	lb := httptest.NewServer(httputil.NewSingleHostReverseProxy(target))
	t.Cleanup(lb.Close)
	viaLB, err := client.New(lb.URL, client.WithBackoff(client.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}

	errs := map[string]error{}
	forged, err := envelope.Generate("bob")
	if err != nil {
		t.Fatal(err)
	}
	_, errs["poll 401"] = c.Poll(ctx, forged, client.PollOptions{})
	errs["stream 401"] = c.Stream(ctx, forged, client.StreamOptions{}, func(client.Message) error { return nil })

	// 429: with room for one stream, bob's is refused while alice's is open;
	// then kezd restarts under alice's, which the server thereby ends.
	refused, restarted := make(chan error, 1), make(chan error, 1)
	errs["stream ended by the server"] = firstReconnect(ctx, c, alice, func() {
		refused <- firstReconnect(ctx, c, bob, nil)
		restarted <- srv.Restart()
	})
	errs["stream 429"] = <-refused
	if err := <-restarted; err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	_, errs["poll unreachable"] = c.Poll(ctx, bob, client.PollOptions{})
	errs["stream unreachable"] = firstReconnect(ctx, c, bob, nil)
	_, errs["poll 502"] = viaLB.Poll(ctx, bob, client.PollOptions{})
	errs["stream 502"] = firstReconnect(ctx, viaLB, bob, nil)

	wantCodes := map[string]client.Code{
		"poll 401": protocol.CodeBadSignature, "stream 401": protocol.CodeBadSignature,
		"stream 429": protocol.CodeRateLimited, "poll 502": protocol.CodeUnavailable, "stream 502": protocol.CodeUnavailable,
	}
	for kind, err := range errs {
		if err == nil {
			t.Errorf("%s: no error", kind)
			continue
		}
		if code, ok := wantCodes[kind]; ok && !client.IsCode(err, code) {
			t.Errorf("%s: got %v, want %s", kind, err, code)
		}
		if signature.MatchString(err.Error()) {
			t.Errorf("%s: the error text carries a credential: %s", kind, err)
		}
	}
	if !errors.Is(errs["stream ended by the server"], client.ErrStreamEnded) {
		t.Errorf("stream ended by the server: got %v, want ErrStreamEnded", errs["stream ended by the server"])
	}
	// The stream's request URL is in the transport error, redacted.
	var ue *url.Error
	if err := errs["stream unreachable"]; !errors.As(err, &ue) || !strings.Contains(ue.URL, "auth=REDACTED") {
		t.Errorf("stream unreachable: got %v, want a *url.Error whose URL says auth=REDACTED", err)
	}
}
