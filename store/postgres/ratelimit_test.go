package postgres_test

import (
	"context"
	"sync"
	"testing"

	"github.com/kez-chat/kezd/store/pgtest"
)

// TakeTokens is one bucket for every process on the database: concurrent
// takes through two *DB never hand out more than the bucket holds.
func TestTakeTokensOneBucketForTwoProcesses(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	ctx := context.Background()

	const burst = 50
	var (
		mu    sync.Mutex
		total float64
		wg    sync.WaitGroup
	)
	for i := range 20 {
		db := a
		if i%2 == 1 {
			db = b
		}
		wg.Go(func() {
			for range 10 {
				// A refill of 1e-9 per second adds nothing while the test runs.
				got, _, err := db.TakeTokens(ctx, "k", 1e-9, burst, 1, 3)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				total += got
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if total < burst-1e-6 || total > burst+1e-6 {
		t.Fatalf("granted %v tokens in all, want the bucket's %d", total, burst)
	}
	// Empty now: fewer than need is nothing, and says what is left.
	got, left, err := a.TakeTokens(ctx, "k", 1e-9, burst, 1, 1)
	if err != nil || got != 0 || left >= 1 {
		t.Fatalf("take from an empty bucket = %v, %v, %v; want 0, <1, nil", got, left, err)
	}
	// Other keys have their own buckets.
	if got, _, err := b.TakeTokens(ctx, "other", 1e-9, burst, 1, 1); err != nil || got != 1 {
		t.Fatalf("take from a fresh key = %v, %v; want 1", got, err)
	}
}

// The bucket refills at its rate on the server's clock.
func TestTakeTokensRefills(t *testing.T) {
	t.Parallel()
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	if got, _, err := db.TakeTokens(ctx, "k", 1000, 10, 10, 10); err != nil || got != 10 {
		t.Fatalf("first take = %v, %v; want 10", got, err)
	}
	// 1000 tokens a second: polling finds it refilled within milliseconds.
	for {
		got, _, err := db.TakeTokens(ctx, "k", 1000, 10, 5, 5)
		if err != nil {
			t.Fatal(err)
		}
		if got == 5 {
			return
		}
	}
}
