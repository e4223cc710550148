// Package baseline holds the plain ways of appending messages with raw pgx,
// on the store's own schema and with the same seq rule (lock the recipient's
// counter row, bump it, insert): one row per transaction, and many rows per
// transaction. Benchmarks compare the store and the whole send path with
// them in the same run; nothing else should use it.
package baseline

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kez-chat/kezd/store"
)

// Seed registers handles, with made-up keys, in one statement: quicker than
// the store's CreateHandle when a benchmark needs thousands.
func Seed(ctx context.Context, pool *pgxpool.Pool, handles []string) error {
	_, err := pool.Exec(ctx, `
		WITH h AS (
			INSERT INTO handles (handle, signing_key, encryption_key)
			SELECT h, 'sk-' || h, 'ek-' || h FROM unnest($1::text[]) AS h
			RETURNING handle
		)
		INSERT INTO inbox_counters (handle) SELECT handle FROM h`, handles)
	if err != nil {
		return fmt.Errorf("seed handles: %w", err)
	}
	return nil
}

// RowPerTx appends m in a transaction of its own, the plain way: BEGIN; bump
// the counter (which locks it until COMMIT); insert; COMMIT.
func RowPerTx(ctx context.Context, pool *pgxpool.Pool, m store.NewMessage) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	var seq int64
	if err := tx.QueryRow(ctx, `UPDATE inbox_counters SET last_seq = last_seq + 1 WHERE handle = $1 RETURNING last_seq`, m.To).Scan(&seq); err != nil {
		return fmt.Errorf("bump counter: %w", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO messages (recipient, seq, sender, client_id, envelope, sent_at) VALUES ($1, $2, $3, $4, $5, now())`,
		m.To, seq, m.From, m.ID, string(m.Envelope)); err != nil {
		return fmt.Errorf("insert: %w", err)
	}
	return tx.Commit(ctx)
}

// Batch appends ms in one transaction: lock the recipients' counters in
// handle order, bump each by its count, COPY the rows in.
func Batch(ctx context.Context, pool *pgxpool.Pool, ms []store.NewMessage) error {
	count := map[string]int64{}
	for _, m := range ms {
		count[m.To]++
	}
	handles := make([]string, 0, len(count))
	for h := range count {
		handles = append(handles, h)
	}
	slices.Sort(handles)
	ns := make([]int64, len(handles))
	for i, h := range handles {
		ns[i] = count[h]
	}

	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM inbox_counters WHERE handle = ANY($1) ORDER BY handle FOR UPDATE`, handles); err != nil {
		return fmt.Errorf("lock counters: %w", err)
	}
	rows, err := tx.Query(ctx, `UPDATE inbox_counters c SET last_seq = c.last_seq + v.n
		FROM unnest($1::text[], $2::bigint[]) AS v(handle, n) WHERE c.handle = v.handle
		RETURNING c.handle, c.last_seq - v.n`, handles, ns)
	if err != nil {
		return fmt.Errorf("bump counters: %w", err)
	}
	last := map[string]int64{}
	for rows.Next() {
		var h string
		var base int64
		if err := rows.Scan(&h, &base); err != nil {
			return err
		}
		last[h] = base
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("bump counters: %w", err)
	}
	now := time.Now()
	src := make([][]any, len(ms))
	for i, m := range ms {
		last[m.To]++
		src[i] = []any{m.To, last[m.To], m.From, m.ID, string(m.Envelope), now}
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"messages"},
		[]string{"recipient", "seq", "sender", "client_id", "envelope", "sent_at"}, pgx.CopyFromRows(src)); err != nil {
		return fmt.Errorf("copy: %w", err)
	}
	return tx.Commit(ctx)
}
