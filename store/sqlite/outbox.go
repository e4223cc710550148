package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/kez-chat/kezd/store"
)

// ConfirmPublished removes the outbox entries of messages whose publish has
// left this process (see store.go).
func (db *DB) ConfirmPublished(ctx context.Context, keys []store.MessageKey) error {
	if len(keys) == 0 {
		return nil
	}
	if err := db.deleteOutbox(ctx, keys); err != nil {
		return fmt.Errorf("confirm published: %w", err)
	}
	return nil
}

func (db *DB) deleteOutbox(ctx context.Context, keys []store.MessageKey) error {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return wrapUnavailable(err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `DELETE FROM outbox WHERE recipient = ? AND seq = ?`)
	if err != nil {
		return wrapUnavailable(err)
	}
	defer stmt.Close()
	for _, k := range keys {
		if _, err := stmt.ExecContext(ctx, k.To, k.Seq); err != nil {
			return wrapUnavailable(err)
		}
	}
	if err := tx.Commit(); err != nil {
		return wrapUnavailable(err)
	}
	return nil
}

// SweepUnpublished claims unconfirmed entries stored more than olderThan
// ago, has publish publish them, and confirms them (see store.go). The
// database is one process's, so the lease is a mutex: a sweep that finds
// another running claims nothing.
func (db *DB) SweepUnpublished(ctx context.Context, olderThan time.Duration, limit int, publish func([]store.Message) error) (int, error) {
	if !db.sweeping.TryLock() {
		return 0, nil
	}
	defer db.sweeping.Unlock()
	rows, err := db.read.QueryContext(ctx, `
		SELECT o.recipient, o.seq, m.seq IS NOT NULL, m.sender, m.client_id, m.envelope, m.sent_at
		FROM outbox o LEFT JOIN messages m ON m.recipient = o.recipient AND m.seq = o.seq
		WHERE o.stored_at <= ? ORDER BY o.recipient, o.seq LIMIT ?`,
		now().Add(-olderThan).UnixMicro(), limit)
	if err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", wrapUnavailable(err))
	}
	defer rows.Close()
	var (
		keys []store.MessageKey
		msgs []store.Message
	)
	for rows.Next() {
		var (
			k          store.MessageKey
			exists     bool
			sender, id sql.NullString
			env        sql.NullString
			sent       sql.NullInt64
		)
		if err := rows.Scan(&k.To, &k.Seq, &exists, &sender, &id, &env, &sent); err != nil {
			return 0, fmt.Errorf("sweep outbox: %w", wrapUnavailable(err))
		}
		keys = append(keys, k)
		if exists {
			msgs = append(msgs, store.Message{Seq: k.Seq, From: sender.String, To: k.To, ID: id.String,
				Envelope: []byte(env.String), SentAt: fromMicros(sent.Int64)})
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", wrapUnavailable(err))
	}
	rows.Close()
	if len(keys) == 0 {
		return 0, nil
	}
	if len(msgs) > 0 {
		if err := publish(msgs); err != nil {
			return 0, fmt.Errorf("sweep outbox: publish: %w", err)
		}
	}
	if err := db.deleteOutbox(ctx, keys); err != nil {
		return 0, fmt.Errorf("sweep outbox: %w", err)
	}
	return len(msgs), nil
}
