package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/kez-chat/kezd/store"
)

// Deleting messages. Every delete takes the deleted messages off their
// inbox's quota usage in its own transaction, on the one writer
// connection: the usage is always what the inbox holds, whichever path
// deletes.

// rememberDeletedConflict ends an insert into deleted_ids, which keeps the
// (sender, client_id) of deleted messages so that a retry is still their
// duplicate (see AppendMessage). A pair already there is an earlier
// message's whose recipient has since deleted its account (the pair was
// then free to be sent again, to another recipient); the later message
// replaces it.
const rememberDeletedConflict = `
			ON CONFLICT (sender, client_id) DO UPDATE SET recipient = excluded.recipient,
				seq = excluded.seq, sent_at = excluded.sent_at, deleted_at = excluded.deleted_at`

// DeleteMessages deletes the messages to `to` with seq <= through, and
// returns how many it deleted and the seq of the oldest message kept (0 when
// none is). Seqs are never reused: the counter keeps its place. An unknown
// handle deletes nothing.
func (db *DB) DeleteMessages(ctx context.Context, to string, through int64) (store.Deleted, error) {
	d, err := inTx(ctx, db, func(tx *sql.Tx) (store.Deleted, error) {
		var d store.Deleted
		var size int64
		if err := tx.QueryRowContext(ctx, `
			SELECT count(*), coalesce(sum(octet_length(envelope)), 0) FROM messages
			WHERE recipient = ? AND seq <= ?`, to, through).Scan(&d.Count, &size); err != nil {
			return d, wrapUnavailable(err)
		}
		for _, q := range []string{
			`INSERT INTO deleted_ids (sender, client_id, recipient, seq, sent_at, deleted_at)
			SELECT sender, client_id, recipient, seq, sent_at, ?5 FROM messages WHERE recipient = ?1 AND seq <= ?2
			` + rememberDeletedConflict,
			`DELETE FROM messages WHERE recipient = ?1 AND seq <= ?2`,
			`UPDATE inbox_counters SET msg_count = msg_count - ?3, msg_bytes = msg_bytes - ?4 WHERE handle = ?1`,
		} {
			if _, err := tx.ExecContext(ctx, q, to, through, d.Count, size, now().UnixMicro()); err != nil {
				return d, wrapUnavailable(err)
			}
		}
		err := tx.QueryRowContext(ctx, `SELECT coalesce(min(seq), 0) FROM messages WHERE recipient = ?`, to).Scan(&d.Oldest)
		return d, wrapUnavailable(err)
	})
	if err != nil {
		return store.Deleted{}, fmt.Errorf("delete messages: %w", err)
	}
	return d, nil
}

// DeleteSentBefore deletes up to limit of the store's messages sent before
// `before`, oldest first, and returns how many it deleted. Retention calls
// it in a loop, so that each transaction, which holds the one writer, stays
// short and sends queue behind it only briefly.
func (db *DB) DeleteSentBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	n, err := inTx(ctx, db, func(tx *sql.Tx) (int64, error) {
		rows, err := tx.QueryContext(ctx, `
			DELETE FROM messages WHERE (recipient, seq) IN (
				SELECT recipient, seq FROM messages WHERE sent_at < ? ORDER BY sent_at LIMIT ?)
			RETURNING sender, client_id, recipient, seq, sent_at, octet_length(envelope)`, before.UnixMicro(), limit)
		if err != nil {
			return 0, wrapUnavailable(err)
		}
		type usage struct{ count, size int64 }
		type deleted struct {
			from, id, to string
			seq, sentAt  int64
		}
		freed := map[string]usage{}
		var gone []deleted
		for rows.Next() {
			var d deleted
			var size int64
			if err := rows.Scan(&d.from, &d.id, &d.to, &d.seq, &d.sentAt, &size); err != nil {
				rows.Close()
				return 0, wrapUnavailable(err)
			}
			u := freed[d.to]
			freed[d.to] = usage{u.count + 1, u.size + size}
			gone = append(gone, d)
		}
		if err := rows.Err(); err != nil {
			return 0, wrapUnavailable(err)
		}
		if err := rows.Close(); err != nil {
			return 0, wrapUnavailable(err)
		}
		at := now().UnixMicro()
		for _, d := range gone {
			if _, err := tx.ExecContext(ctx, `
				INSERT INTO deleted_ids (sender, client_id, recipient, seq, sent_at, deleted_at)
				VALUES (?, ?, ?, ?, ?, ?)`+rememberDeletedConflict,
				d.from, d.id, d.to, d.seq, d.sentAt, at); err != nil {
				return 0, wrapUnavailable(err)
			}
		}
		for to, u := range freed {
			if _, err := tx.ExecContext(ctx, `
				UPDATE inbox_counters SET msg_count = msg_count - ?, msg_bytes = msg_bytes - ? WHERE handle = ?`,
				u.count, u.size, to); err != nil {
				return 0, wrapUnavailable(err)
			}
		}
		return int64(len(gone)), nil
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired: %w", err)
	}
	return n, nil
}

// ForgetDeletedIDs forgets up to limit of the (sender, id) pairs of
// messages deleted before `before`, oldest first, and returns how many it
// forgot: a retry of one of them is a new message from then on.
func (db *DB) ForgetDeletedIDs(ctx context.Context, before time.Time, limit int) (int64, error) {
	n, err := inTx(ctx, db, func(tx *sql.Tx) (int64, error) {
		res, err := tx.ExecContext(ctx, `
			DELETE FROM deleted_ids WHERE (sender, client_id) IN (
				SELECT sender, client_id FROM deleted_ids WHERE deleted_at < ? ORDER BY deleted_at LIMIT ?)`,
			before.UnixMicro(), limit)
		if err != nil {
			return 0, wrapUnavailable(err)
		}
		return res.RowsAffected()
	})
	if err != nil {
		return 0, fmt.Errorf("forget deleted ids: %w", err)
	}
	return n, nil
}
