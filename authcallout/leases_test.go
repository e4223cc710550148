package authcallout_test

import (
	"context"
	"encoding/hex"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// recordingLeases is the deployment's leases in memory (as postgres.Leases
// counts them per handle), recording what the callout asks of them.
type recordingLeases struct {
	mu       sync.Mutex
	next     int64
	open     map[int64]string // handle by lease id
	perIPs   []int            // of every acquire
	releases [][]int64        // of every ReleaseLeases call
}

func (l *recordingLeases) AcquireLease(_ context.Context, kind, handle, ip string, perHandle, perIP int) (int64, int, int, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.perIPs = append(l.perIPs, perIP)
	n := 0
	for _, h := range l.open {
		if h == handle {
			n++
		}
	}
	if n >= perHandle {
		return 0, n, 0, false, nil
	}
	l.next++
	l.open[l.next] = handle
	return l.next, n, 0, true, nil
}

func (l *recordingLeases) ReleaseLeases(_ context.Context, ids []int64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.releases = append(l.releases, slices.Sorted(slices.Values(ids)))
	for _, id := range ids {
		delete(l.open, id)
	}
	return nil
}

func (l *recordingLeases) state() (open []int64, perIPs []int, releases [][]int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for id := range l.open {
		open = append(open, id)
	}
	slices.Sort(open)
	return open, slices.Clone(l.perIPs), slices.Clone(l.releases)
}

// leasesSetup is an embedded NATS with the deployment's keys, a store with
// alice registered, and leases in memory, for a callout to be started on.
func leasesSetup(t *testing.T) (deploykeys.Keys, kezNATS, *sqlite.DB, user, *recordingLeases) {
	t.Helper()
	k := testKeys(t)
	n := startEmbedded(t, k, authTimeout)
	db := teststore.SQLite(t)
	return k, n, db, register(t, db, "alice"), &recordingLeases{open: map[int64]string{}}
}

// The leases of a stopped callout's logins stay taken while their
// connections are open, and ReleaseLeases (which kezd serve calls once the
// broker has closed them) gives them all back in one call (defect: Stop gave
// them back one DELETE at a time, before the broker closed the connections,
// so that other instances could admit more meanwhile). The logins' leases
// ask for no per-IP cap (defect: MaxInt32, which still locked and counted
// the address's leases).
func TestLeasesGivenBackTogetherAfterStop(t *testing.T) {
	t.Parallel()
	k, n, db, alice, leases := leasesSetup(t)
	svc := startCallout(t, n.url, k, db, authcallout.Config{MaxConnsPerHandle: 3, Conns: n.broker, Leases: leases})

	login(t, n.url, alice)
	login(t, n.url, alice)
	open, perIPs, releases := leases.state()
	if len(open) != 2 || !slices.Equal(perIPs, []int{0, 0}) || len(releases) != 0 {
		t.Fatalf("after two logins: open %v, per-IP caps asked %v, releases %v; want 2 open, caps [0 0], none released", open, perIPs, releases)
	}

	svc.Stop()
	if _, _, releases := leases.state(); len(releases) != 0 {
		t.Fatalf("Stop gave back leases of open connections: %v", releases)
	}
	svc.ReleaseLeases()
	if _, _, releases := leases.state(); len(releases) != 1 || !slices.Equal(releases[0], open) {
		t.Fatalf("ReleaseLeases: calls %v, want one with %v", releases, open)
	}
	svc.ReleaseLeases() // again: nothing left to give back
	if _, _, releases := leases.state(); len(releases) != 1 {
		t.Fatalf("a second ReleaseLeases released again: %v", releases)
	}
}

// unannounced is a server that does not answer for its connections' count
// in time, and whose connections never say they closed: an external
// server that died, or whose announcements kezd missed.
type unannounced struct{ authcallout.ConnCounter }

func (unannounced) HandleClients(string, string) ([]broker.Client, bool) { return nil, false }
func (unannounced) ClientOpen(string, uint64) (open, ok bool)            { return true, true }

// A login's lease is given back once its JWT has expired, by when its
// server has closed the connection, even if nothing said that it closed
// (defect: a lease whose connection's close went unseen was held for as
// long as the instance lived); before that it is held. A server that gives no
// count still has its logins capped by the leases (defect: not at all).
// The cap is 1, so each login past the first sweeps the handle's leases
// at once: no test waits for the sweep's tick.
func TestLeaseGivenBackWhenItsLoginExpires(t *testing.T) {
	t.Parallel()
	k, n, db, alice, leases := leasesSetup(t)
	var ahead atomic.Int64 // how far the callout's clock is ahead of the real one
	now := func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) }
	startCallout(t, n.url, k, db, authcallout.Config{MaxConnsPerHandle: 1, Conns: unannounced{n.broker}, Leases: leases,
		TTL: time.Minute, Now: now})

	login(t, n.url, alice)
	if open, _, _ := leases.state(); len(open) != 1 {
		t.Fatalf("after a login: open leases %v, want 1", open)
	}
	// At the JWT's expiry, within the clocks' slack: held, so refused.
	ahead.Store(int64(time.Minute + time.Second))
	if nc, err := nats.Connect(n.url, kezLogin(alice.handle, alice.priv)...); err == nil {
		nc.Close()
		t.Fatal("a second login was accepted past the cap of 1 while the first's lease was held")
	}
	if open, _, releases := leases.state(); len(open) != 1 || len(releases) != 0 {
		t.Fatalf("before the first login expired: open %v, released %v; want it held", open, releases)
	}
	// Past it: given back, and the new login takes the slot.
	ahead.Store(int64(time.Minute + 10*time.Second))
	nc, err := nats.Connect(n.url, kezLogin(alice.handle, alice.priv)...)
	if err != nil {
		t.Fatalf("a login once the first had expired: %v", err)
	}
	nc.Close()
	if open, _, releases := leases.state(); len(open) != 1 || len(releases) != 1 {
		t.Fatalf("after the first login expired: open %v, released %v; want the first given back and one open", open, releases)
	}
}

// heldLookup holds the lookups of one signing key until release is closed,
// saying on held that one is waiting. With answered, it looks the key up
// first and holds the answer: a login whose key was checked before a change
// (a rotation) and that its server sets up only after.
type heldLookup struct {
	authcallout.HandleLookup
	key      string
	answered bool
	held     chan struct{} // buffered
	release  chan struct{}
}

func (l *heldLookup) HandleByKey(ctx context.Context, key string) (store.Handle, error) {
	var h store.Handle
	var err error
	if l.answered {
		h, err = l.HandleLookup.HandleByKey(ctx, key)
	}
	if key == l.key {
		select {
		case l.held <- struct{}{}:
		default:
		}
		select {
		case <-l.release:
		case <-ctx.Done():
		}
	}
	if !l.answered {
		h, err = l.HandleLookup.HandleByKey(ctx, key)
	}
	return h, err
}

// A connection whose login is still pending does not count against the
// handle it names (defect: it did, so that connections naming a victim's
// handle and held pending could fill its cap): the server counts only the
// application account's connections. The callout has one worker, held by
// another login, so that a connection naming alice without a key waits.
func TestPendingLoginNotCountedForTheHandleItNames(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	n := startEmbedded(t, k, authTimeout)
	db := teststore.SQLite(t)
	register(t, db, "alice")
	mallory := register(t, db, "mallory")
	lookup := &heldLookup{HandleLookup: db, key: hex.EncodeToString(mallory.pub()), held: make(chan struct{}, 1), release: make(chan struct{})}
	startCallout(t, n.url, k, lookup, authcallout.Config{MaxConnsPerHandle: 1, Conns: n.broker, Workers: 1})
	var logins sync.WaitGroup
	defer logins.Wait()
	released := false
	defer func() {
		if !released {
			close(lookup.release)
		}
	}()
	logins.Go(func() {
		if nc, err := nats.Connect(n.url, kezLogin("mallory", mallory.priv)...); err == nil {
			nc.Close()
		}
	})
	select {
	case <-lookup.held:
	case <-time.After(10 * time.Second):
		t.Fatal("mallory's login never reached the callout's lookup")
	}
	logins.Go(func() {
		if nc, err := nats.Connect(n.url, nats.UserInfo("alice", "")); err == nil {
			nc.Close()
		}
	})
	testwait.Until(t, "a pending connection naming alice on the server", func() bool {
		c, err := n.srv.Connz(&server.ConnzOptions{Username: true, User: "alice"})
		return err == nil && len(c.Conns) == 1
	})
	if c, ok := n.broker.HandleConnections(n.broker.ServerID(), "alice"); !ok || c != 0 {
		t.Errorf("alice's connections with one pending connection naming her: %d, %v; want 0, true", c, ok)
	}
	close(lookup.release)
	released = true
}
