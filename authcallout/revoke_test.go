package authcallout_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/store"
)

// A login granted with a key that is rotated away before its server sets
// the connection up does not survive the rotation (defect: the broker's
// revocation kick listed the handle's connections once, this one was not
// yet among them, and it stayed up, receiving the handle's messages and
// sending as it, for its whole JWT). The revocation is processed as kezd
// serve does (the broker's kick, the callout's Revoked, then the core) and
// completely before the login's answer is let go.
func TestLoginInFlightDuringRotationClosed(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	n := startEmbedded(t, k, authTimeout)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	oldKey := hex.EncodeToString(alice.pub())
	lookup := &heldLookup{HandleLookup: db, key: oldKey, answered: true, held: make(chan struct{}, 1), release: make(chan struct{})}
	callout := startCallout(t, n.url, k, lookup, authcallout.Config{Kicker: n.broker})
	svc := core(t, db, n.broker)
	processed := make(chan string, 2)
	stop, err := n.broker.OnRevocation(func(rev chat.Revocation) {
		callout.Revoked(rev)
		svc.Revoked(context.Background(), rev)
		processed <- rev.Handle
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	var released sync.Once
	release := func() { released.Do(func() { close(lookup.release) }) }
	defer release()
	type result struct {
		nc  *nats.Conn
		err error
	}
	logged := make(chan result, 1)
	go func() {
		// nats.go's own 2 s connect timeout would end a held login by
		// itself, and the test would pass for that.
		nc, err := nats.Connect(n.url, append(kezLogin("alice", alice.priv), nats.NoReconnect(), nats.Timeout(2*authTimeout))...)
		logged <- result{nc, err}
	}()
	select {
	case <-lookup.held:
	case <-time.After(10 * time.Second):
		t.Fatal("alice's login never reached the callout's lookup")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	newKey := newKey(t)
	cur, err := db.Handle(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.RotateKeys(ctx, "alice", oldKey, store.Handle{SigningKey: hex.EncodeToString(newKey.Public().(ed25519.PublicKey)), EncryptionKey: cur.EncryptionKey}); err != nil {
		t.Fatal(err)
	}
	if err := n.broker.AnnounceRevocation(ctx, chat.Revocation{Handle: "alice", Keys: []string{oldKey}}); err != nil {
		t.Fatal(err)
	}
	// Revocations are handled one at a time: once a second one has been
	// taken, the broker's kick for the first is done.
	if err := n.broker.AnnounceRevocation(ctx, chat.Revocation{Handle: "zed", Keys: []string{}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alice", "zed"} {
		select {
		case got := <-processed:
			if got != want {
				t.Fatalf("revocation of %q processed, want %q", got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("revocation of %q never processed", want)
		}
	}

	release()
	var r result
	select {
	case r = <-logged:
	case <-time.After(2 * authTimeout):
		t.Fatal("alice's login never ended")
	}
	if r.err == nil {
		defer r.nc.Close()
		c, ok := n.broker.HandleConnections(n.broker.ServerID(), "alice")
		t.Fatalf("the old key's login was set up after the rotation (alice has %d connections, %v): it survived it", c, ok)
	}
}
