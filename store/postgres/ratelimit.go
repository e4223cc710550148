package postgres

import (
	"context"
	"fmt"
	"time"
)

// TakeTokens is the shared half of package ratelimit's buckets: it refills
// key's bucket on the server's clock and takes between need and want tokens
// from it, or none when it holds fewer than need (see take_tokens in
// migration 0002). A bucket row nobody used for a day is deleted now and
// then; it would be full again by then under every limit kezd documents.
func (db *DB) TakeTokens(ctx context.Context, key string, rate, burst, need, want float64) (granted, left float64, err error) {
	if err := db.pool.QueryRow(ctx, `SELECT granted, tokens_left FROM take_tokens($1, $2, $3, $4, $5)`,
		key, rate, burst, need, want).Scan(&granted, &left); err != nil {
		return 0, 0, fmt.Errorf("take tokens: %w", translate(err))
	}
	if db.sweepDue() {
		// Best effort: a failed sweep leaves rows for the next one.
		_, _ = db.pool.Exec(ctx, `DELETE FROM rate_buckets WHERE at < now() - interval '1 day'`)
	}
	return granted, left, nil
}

// bucketSweepEvery is how often a process deletes idle bucket rows.
const bucketSweepEvery = 10 * time.Minute

// sweepDue reports, to one caller at a time, that a sweep of idle bucket
// rows is due.
func (db *DB) sweepDue() bool {
	now := time.Now().UnixNano()
	next := db.nextBucketSweep.Load()
	return now >= next && db.nextBucketSweep.CompareAndSwap(next, now+int64(bucketSweepEvery))
}
