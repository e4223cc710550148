package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// Leases of two instances on one database share their caps, per handle and
// per IP, also when they race; a released lease frees its slot.
func TestLeasesAreShared(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	a := postgres.NewLeases(open(t, url), 0, nil)
	b := postgres.NewLeases(open(t, url), 0, nil)
	ctx := t.Context()

	// 16 acquires for one handle from distinct IPs, 8 on each instance, at once.
	var mu sync.Mutex
	var got []int64
	var wg sync.WaitGroup
	for i := range 16 {
		l := []*postgres.Leases{a, b}[i%2]
		wg.Go(func() {
			id, _, _, ok, err := l.AcquireLease(ctx, "streams", "bob", fmt.Sprintf("ip%d", i), 8, 100)
			if err != nil {
				t.Error(err)
				return
			}
			if ok {
				mu.Lock()
				got = append(got, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(got) != 8 {
		t.Fatalf("two instances granted %d leases for one handle, want 8", len(got))
	}
	id, handleOpen, _, ok, err := b.AcquireLease(ctx, "streams", "bob", "ip99", 8, 100)
	if err != nil || ok || handleOpen != 8 {
		t.Fatalf("9th lease: id %d, handleOpen %d, ok %v, err %v; want refused at 8", id, handleOpen, ok, err)
	}
	// Another kind and another handle are counted apart.
	if _, _, _, ok, err := b.AcquireLease(ctx, "long-polls", "bob", "ip99", 8, 100); err != nil || !ok {
		t.Fatalf("long-poll lease: ok %v, err %v", ok, err)
	}
	if err := a.ReleaseLease(ctx, got[0]); err != nil {
		t.Fatal(err)
	}
	if _, _, _, ok, err := b.AcquireLease(ctx, "streams", "bob", "ip99", 8, 100); err != nil || !ok {
		t.Fatalf("lease after a release: ok %v, err %v", ok, err)
	}

	// Per IP: two handles from one address, cap 3.
	for i := range 3 {
		if _, _, _, ok, err := []*postgres.Leases{a, b}[i%2].AcquireLease(ctx, "streams", fmt.Sprintf("h%d", i), "10.0.0.1", 8, 3); err != nil || !ok {
			t.Fatalf("IP lease %d: ok %v, err %v", i, ok, err)
		}
	}
	_, handleOpen, ipOpen, ok, err := a.AcquireLease(ctx, "streams", "h9", "10.0.0.1", 8, 3)
	if err != nil || ok || handleOpen != 0 || ipOpen != 3 {
		t.Fatalf("4th lease of an IP: handleOpen %d, ipOpen %d, ok %v, err %v; want refused at 3 per IP", handleOpen, ipOpen, ok, err)
	}
}

// A stopped instance's leases expire by themselves; a running one's are
// renewed past their TTL.
func TestLeasesExpireUnlessRenewed(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	const ttl = 600 * time.Millisecond
	dead := postgres.NewLeases(open(t, url), ttl, nil) // never Run: killed
	live := postgres.NewLeases(open(t, url), ttl, nil)
	ctx := t.Context()
	go live.Run(ctx)

	if _, _, _, ok, err := live.AcquireLease(ctx, "streams", "bob", "ip", 2, 100); err != nil || !ok {
		t.Fatalf("live lease: ok %v, err %v", ok, err)
	}
	if _, _, _, ok, err := dead.AcquireLease(ctx, "streams", "bob", "ip", 2, 100); err != nil || !ok {
		t.Fatalf("dead lease: ok %v, err %v", ok, err)
	}
	start := time.Now()
	// The dead instance's lease frees its slot after its TTL; the live
	// instance's, renewed, never does. Expiry is the database's clock, so
	// this polls.
	testwait.Until(t, "the stopped instance's lease to expire", func() bool {
		_, handleOpen, _, ok, err := live.AcquireLease(ctx, "streams", "bob", "ip", 2, 100)
		if err != nil {
			t.Fatal(err)
		}
		if !ok && handleOpen != 2 {
			t.Fatalf("refused with %d open, want 2", handleOpen)
		}
		return ok
	})
	if time.Since(start) < ttl/2 {
		t.Fatalf("the dead lease expired after %v, before its TTL %v", time.Since(start), ttl)
	}
	// Several TTLs later, the live leases (two now) still count.
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if _, handleOpen, _, ok, err := live.AcquireLease(ctx, "streams", "bob", "ip", 2, 100); err != nil || ok || handleOpen != 2 {
			t.Fatalf("live leases lapsed: handleOpen %d, ok %v, err %v", handleOpen, ok, err)
		}
		time.Sleep(ttl / 4) // sampling, not synchronisation
	}
}

// Without a per-IP cap (perIP 0, the NATS logins' leases), acquiring
// neither waits for the address's lock nor counts its leases: with another
// transaction holding the (kind, ip) lock, it still takes its lease, while
// with a per-IP cap it waits for that lock (until its context ends). Before,
// every login behind one proxy or NAT queued on that one lock.
func TestLeaseWithoutIPCapTakesNoIPLock(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	l := postgres.NewLeases(open(t, url), 0, nil)
	ctx := t.Context()
	const kind, ip = "nats-connections", "10.0.0.1"
	for i := range 2 { // the address has leases, which a count would see
		if _, _, _, ok, err := l.AcquireLease(ctx, kind, fmt.Sprintf("h%d", i), ip, 8, 100); err != nil || !ok {
			t.Fatalf("lease %d: ok %v, err %v", i, ok, err)
		}
	}

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended($1 || '|i|' || $2, 0))`, kind, ip); err != nil {
		t.Fatal(err)
	}

	// The check that the lock held is the IP's: a per-IP cap waits for it.
	wctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, _, ok, err := l.AcquireLease(wctx, kind, "alice", ip, 8, 100); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("with a per-IP cap under the held IP lock: ok %v, err %v; want it to wait until its context ends", ok, err)
	}

	// No per-IP cap: not blocked (bounded by a context, so that a regression
	// fails rather than hangs).
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	id, handleOpen, ipOpen, ok, err := l.AcquireLease(nctx, kind, "alice", ip, 8, 0)
	if err != nil || !ok || handleOpen != 0 || ipOpen != 0 {
		t.Fatalf("without a per-IP cap under the held IP lock: id %d, handleOpen %d, ipOpen %d, ok %v, err %v; want taken, 0 and 0 (not counted)",
			id, handleOpen, ipOpen, ok, err)
	}
	// The per-handle cap still holds without a per-IP cap.
	for range 2 {
		if _, _, _, ok, err := l.AcquireLease(nctx, kind, "bob", ip, 2, 0); err != nil || !ok {
			t.Fatalf("bob's lease: ok %v, err %v", ok, err)
		}
	}
	if _, handleOpen, _, ok, err := l.AcquireLease(nctx, kind, "bob", ip, 2, 0); err != nil || ok || handleOpen != 2 {
		t.Fatalf("bob's 3rd lease: handleOpen %d, ok %v, err %v; want refused at 2", handleOpen, ok, err)
	}
}

// ReleaseLeases gives back several leases in one call, and only those.
func TestReleaseLeases(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	l := postgres.NewLeases(open(t, url), 0, nil)
	ctx := t.Context()
	var ids []int64
	for range 3 {
		id, _, _, ok, err := l.AcquireLease(ctx, "nats-connections", "bob", "ip", 3, 0)
		if err != nil || !ok {
			t.Fatalf("lease: ok %v, err %v", ok, err)
		}
		ids = append(ids, id)
	}
	if err := l.ReleaseLeases(ctx, ids[:2]); err != nil {
		t.Fatal(err)
	}
	if err := l.ReleaseLeases(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 3; want++ {
		_, handleOpen, _, ok, err := l.AcquireLease(ctx, "nats-connections", "bob", "ip", 3, 0)
		if err != nil || ok != (want < 3) || handleOpen != want {
			t.Fatalf("after releasing 2 of 3: handleOpen %d, ok %v, err %v; want %d open", handleOpen, ok, err, want)
		}
	}
}
