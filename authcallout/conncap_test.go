package authcallout_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/store"
)

// barrierLookup holds every lookup until n are waiting, then lets them all
// go: n logins of one handle decided at the same moment.
type barrierLookup struct {
	authcallout.HandleLookup
	n       int32
	waiting atomic.Int32
	release chan struct{}
}

func (l *barrierLookup) HandleByKey(ctx context.Context, key string) (store.Handle, error) {
	if l.waiting.Add(1) == l.n {
		close(l.release)
	}
	select {
	case <-l.release:
	case <-ctx.Done():
	}
	return l.HandleLookup.HandleByKey(ctx, key)
}

// Logins of one handle decided at the same moment do not pass its cap
// (defect: each counted only the connections its server had set up, none
// of the others yet, and all were granted). 12 logins, a cap of 3, and a
// worker for each.
func TestSimultaneousLoginsKeepTheCap(t *testing.T) {
	t.Parallel()
	const logins, limit = 12, 3
	k := testKeys(t)
	n := startEmbedded(t, k, authTimeout)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	lookup := &barrierLookup{HandleLookup: db, n: logins, release: make(chan struct{})}
	startCallout(t, n.url, k, lookup, authcallout.Config{MaxConnsPerHandle: limit, Conns: n.broker, Workers: logins})
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted []*nats.Conn
	)
	for range logins {
		wg.Go(func() {
			nc, err := nats.Connect(n.url, append(kezLogin("alice", alice.priv), nats.NoReconnect(), nats.Timeout(2*authTimeout))...)
			if err != nil {
				return
			}
			mu.Lock()
			granted = append(granted, nc)
			mu.Unlock()
		})
	}
	wg.Wait()
	for _, nc := range granted {
		defer nc.Close()
	}
	if len(granted) == 0 || len(granted) > limit {
		t.Errorf("%d of %d simultaneous logins granted, want 1 to %d", len(granted), logins, limit)
	}
	if c, ok := n.broker.HandleConnections(n.broker.ServerID(), "alice"); !ok || c > limit {
		t.Errorf("alice has %d connections (%v), over her cap of %d", c, ok, limit)
	}
}
