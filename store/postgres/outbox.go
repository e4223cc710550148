package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/kez-chat/kezd/store"
)

// deleteOutboxSQL removes the outbox entries of the keys $1 (recipients)
// and $2 (seqs), which a confirmation and a sweep both do.
const deleteOutboxSQL = `
DELETE FROM outbox o USING unnest($1::text[], $2::bigint[]) AS k(recipient, seq)
WHERE o.recipient = k.recipient AND o.seq = k.seq`

// ConfirmPublished removes the outbox entries of messages whose publish has
// left this process (see store.go).
func (db *DB) ConfirmPublished(ctx context.Context, keys []store.MessageKey) error {
	if len(keys) == 0 {
		return nil
	}
	to := make([]string, len(keys))
	seq := make([]int64, len(keys))
	for i, k := range keys {
		to[i], seq[i] = k.To, k.Seq
	}
	if _, err := db.pool.Exec(ctx, deleteOutboxSQL, to, seq); err != nil {
		return fmt.Errorf("confirm published: %w", translate(err))
	}
	return nil
}

// sweepSQL claims outbox entries older than $1 seconds, at most $2. The row
// locks are the lease: a concurrent sweep anywhere skips them, and they go
// when this transaction ends (or its connection does, if the process dies).
const sweepSQL = `
SELECT o.recipient, o.seq, m.seq IS NOT NULL, m.sender, m.client_id, m.envelope, m.sent_at
FROM outbox o LEFT JOIN messages m ON m.recipient = o.recipient AND m.seq = o.seq
WHERE o.stored_at <= now() - make_interval(secs => $1::float8)
ORDER BY o.recipient, o.seq
LIMIT $2
FOR UPDATE OF o SKIP LOCKED`

// SweepUnpublished claims unconfirmed entries stored more than olderThan
// ago, has publish publish them, and confirms them (see store.go).
func (db *DB) SweepUnpublished(ctx context.Context, olderThan time.Duration, limit int, publish func([]store.Message) error) (int, error) {
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", translate(err))
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	rows, err := tx.Query(ctx, sweepSQL, olderThan.Seconds(), limit)
	if err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", translate(err))
	}
	var (
		to   []string
		seqs []int64
		msgs []store.Message
	)
	for rows.Next() {
		var (
			k          store.MessageKey
			exists     bool
			sender, id *string
			env        *string
			sentAt     *time.Time
		)
		if err := rows.Scan(&k.To, &k.Seq, &exists, &sender, &id, &env, &sentAt); err != nil {
			rows.Close()
			return 0, fmt.Errorf("sweep outbox: %w", translate(err))
		}
		to, seqs = append(to, k.To), append(seqs, k.Seq)
		if exists {
			msgs = append(msgs, store.Message{Seq: k.Seq, From: *sender, To: k.To, ID: *id,
				Envelope: []byte(*env), SentAt: sentAt.UTC()})
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", translate(err))
	}
	if len(to) == 0 {
		return 0, nil
	}
	if len(msgs) > 0 {
		if err := publish(msgs); err != nil {
			return 0, fmt.Errorf("sweep outbox: publish: %w", err)
		}
	}
	if _, err := tx.Exec(ctx, deleteOutboxSQL, to, seqs); err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", translate(err))
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", translate(err))
	}
	return len(msgs), nil
}
