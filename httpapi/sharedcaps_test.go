package httpapi

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// The per-handle stream cap holds across two instances on one Postgres: 8
// streams open on A and B together, the 9th is refused on either, and one
// closed on A lets one open on B.
func TestStreamCapsAcrossInstances(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	instance := func() *env {
		db := teststore.PostgresOn(t, url)
		leases := postgres.NewLeases(db, 0, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); leases.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return newEnv(t, db, func(c *Config) {
			c.SharedCaps = leases
			// A closed stream is noticed at the ping after next.
			c.PingInterval = 50 * time.Millisecond
		})
	}
	a, b := instance(), instance()
	bob := newUser(t, "bob")
	a.register(bob)

	var onA []*sseStream
	for range 5 {
		s := a.openStream(streamPath(bob, "bob", ""), nil)
		s.wantReady(0)
		onA = append(onA, s)
	}
	for range 3 {
		b.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)
	}
	refused := func(e *env) {
		t.Helper()
		// openStream, bounded: an admitted stream would not end by itself.
		if s := e.openStream(streamPath(bob, "bob", ""), nil); s.res.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("9th stream: status %d, want 429", s.res.StatusCode)
		}
	}
	refused(a)
	refused(b)

	onA[0].res.Body.Close()
	// A notices the closed connection at a ping; nothing signals it. The
	// slot is free by the time the count drops: the lease goes first.
	testwait.Until(t, "A's open streams to drop to 4", func() bool { return a.srv.OpenStreams() == 4 })
	b.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)
	refused(a)
}

// failingCaps is shared caps whose store is down.
type failingCaps struct{}

func (failingCaps) AcquireLease(context.Context, string, string, string, int, int) (int64, int, int, bool, error) {
	return 0, 0, 0, false, errors.New("store down")
}

func (failingCaps) ReleaseLease(context.Context, int64) error { return errors.New("store down") }

// With the shared count's store down, streams are admitted on the local
// count alone: neither all refused nor uncapped.
func TestStreamCapsFallBackToLocalWhenTheStoreFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t, openSQLite(t), func(c *Config) { c.SharedCaps = failingCaps{}; c.MaxStreamsPerHandle = 2 })
	bob := newUser(t, "bob")
	e.register(bob)
	for range 2 {
		e.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)
	}
	e.do(http.MethodGet, streamPath(bob, "bob", ""), nil, nil).wantError(t, http.StatusTooManyRequests, protocol.CodeRateLimited)
}
