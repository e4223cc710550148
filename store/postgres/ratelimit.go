package postgres

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/kez-chat/kezd/ratelimit"
)

// TakeTokens is the shared half of package ratelimit's buckets: for each
// take it refills the bucket on the server's clock, subtracts what was
// Spent on credit, and takes between Need and Want tokens from the rest, or
// none when fewer than Need are left, all in one round trip (see take_tokens in migration 0004). A bucket row nobody
// used for a day is deleted now and then; under every limit kezd documents
// it would be full again by then.
func (db *DB) TakeTokens(ctx context.Context, takes []ratelimit.Take) ([]ratelimit.Grant, error) {
	// Rows are locked in key order, whatever order the caller gives.
	order := make([]int, len(takes))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(takes[a].Key, takes[b].Key) })
	n := len(takes)
	keys := make([]string, n)
	rates, bursts, spents, needs, wants := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for j, i := range order {
		t := takes[i]
		keys[j], rates[j], bursts[j], spents[j], needs[j], wants[j] = t.Key, t.Rate, t.Burst, t.Spent, t.Need, t.Want
	}
	var granted, left []float64
	if err := db.pool.QueryRow(ctx, `SELECT granted, tokens_left FROM take_tokens($1, $2, $3, $4, $5, $6)`,
		keys, rates, bursts, spents, needs, wants).Scan(&granted, &left); err != nil {
		return nil, fmt.Errorf("take tokens: %w", translate(err))
	}
	if len(granted) != n || len(left) != n {
		return nil, fmt.Errorf("take tokens: %d answers to %d takes", len(granted), n)
	}
	out := make([]ratelimit.Grant, n)
	for j, i := range order {
		out[i] = ratelimit.Grant{Granted: granted[j], Left: left[j]}
	}
	if db.sweepDue() {
		// Best effort: a failed sweep leaves rows for the next one.
		_, _ = db.pool.Exec(ctx, `DELETE FROM rate_buckets WHERE at < now() - interval '1 day'`)
	}
	return out, nil
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
