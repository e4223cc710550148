package postgres_test

import (
	"context"
	"sync"
	"testing"

	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// take is TakeTokens of one bucket.
func take(ctx context.Context, db *postgres.DB, key string, rate, burst, need, want float64) (granted, left float64, err error) {
	g, err := db.TakeTokens(ctx, []ratelimit.Take{{Key: key, Rate: rate, Burst: burst, Need: need, Want: want}})
	if err != nil {
		return 0, 0, err
	}
	return g[0].Granted, g[0].Left, nil
}

// Several buckets in one call each get their own answer, in the caller's
// order, whatever order the rows are locked in.
func TestTakeTokensSeveral(t *testing.T) {
	t.Parallel()
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	if _, _, err := take(ctx, db, "a", 1e-9, 5, 5, 5); err != nil { // a is empty now
		t.Fatal(err)
	}
	got, err := db.TakeTokens(ctx, []ratelimit.Take{
		{Key: "z", Rate: 1e-9, Burst: 10, Need: 1, Want: 4},
		{Key: "a", Rate: 1e-9, Burst: 5, Need: 1, Want: 1},
		{Key: "m", Rate: 1e-9, Burst: 3, Need: 1, Want: 8},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []ratelimit.Grant{{Granted: 4, Left: 6}, {Granted: 0, Left: 0}, {Granted: 3, Left: 0}}
	for i := range want {
		if got[i].Granted != want[i].Granted || got[i].Left > want[i].Left+1e-6 || got[i].Left < want[i].Left {
			t.Fatalf("take %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

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
				got, _, err := take(ctx, db, "k", 1e-9, burst, 1, 3)
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
	got, left, err := take(ctx, a, "k", 1e-9, burst, 1, 1)
	if err != nil || got != 0 || left >= 1 {
		t.Fatalf("take from an empty bucket = %v, %v, %v; want 0, <1, nil", got, left, err)
	}
	// Other keys have their own buckets.
	if got, _, err := take(ctx, b, "other", 1e-9, burst, 1, 1); err != nil || got != 1 {
		t.Fatalf("take from a fresh key = %v, %v; want 1", got, err)
	}
}

// The bucket refills at its rate on the server's clock.
func TestTakeTokensRefills(t *testing.T) {
	t.Parallel()
	db := open(t, pgtest.NewDatabase(t))
	ctx := context.Background()
	if got, _, err := take(ctx, db, "k", 1000, 10, 10, 10); err != nil || got != 10 {
		t.Fatalf("first take = %v, %v; want 10", got, err)
	}
	// 1000 tokens a second: polling finds it refilled within milliseconds.
	for {
		got, _, err := take(ctx, db, "k", 1000, 10, 5, 5)
		if err != nil {
			t.Fatal(err)
		}
		if got == 5 {
			return
		}
	}
}
