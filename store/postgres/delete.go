package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/store"
)

// Deleting messages.
//
// Every delete takes the counter rows of the inboxes it deletes from (FOR
// UPDATE, in handle order, as an append batch does) before it touches
// their messages, and takes the deleted messages off the inbox's usage in
// the same transaction: an inbox's quota usage is always what it holds,
// whichever path deletes, and an append checking the quota waits for a
// delete of its inbox to commit rather than reading a count it is about to
// change.

// retentionLock is the pg_try_advisory_xact_lock key that keeps one
// retention batch at a time across the processes sharing the database; the
// others skip their turn instead of queueing on the same rows.
const retentionLock = 0x6b657a72 // "kezr"

// forgetLock is retentionLock's for ForgetDeletedIDs.
const forgetLock = 0x6b657a66 // "kezf"

// rememberDeletedSQL, a CTE over d (the deleted messages), keeps their
// (sender, client_id) in deleted_ids, so that a retry is still their
// duplicate (see AppendMessage). A pair already there is an earlier
// message's whose recipient has since deleted its account (the pair was
// then free to be sent again, to another recipient); the later message
// replaces it.
const rememberDeletedSQL = `
				INSERT INTO deleted_ids (sender, client_id, recipient, seq, sent_at)
				SELECT sender, client_id, recipient, seq, sent_at FROM d
				ON CONFLICT (sender, client_id) DO UPDATE SET recipient = EXCLUDED.recipient,
					seq = EXCLUDED.seq, sent_at = EXCLUDED.sent_at, deleted_at = EXCLUDED.deleted_at`

// DeleteMessages deletes the messages to `to` with seq <= through, and
// returns how many it deleted and the seq of the oldest message kept (0 when
// none is). Seqs are never reused: the counter keeps its place. An unknown
// handle deletes nothing.
func (db *DB) DeleteMessages(ctx context.Context, to string, through int64) (store.Deleted, error) {
	d, err := inTx(ctx, db, func(tx pgx.Tx) (store.Deleted, error) {
		var d store.Deleted
		if _, err := tx.Exec(ctx, `SELECT 1 FROM inbox_counters WHERE handle = $1 FOR UPDATE`, to); err != nil {
			return d, err
		}
		err := tx.QueryRow(ctx, `
			WITH d AS (
				DELETE FROM messages WHERE recipient = $1 AND seq <= $2
				RETURNING sender, client_id, recipient, seq, sent_at, octet_length(envelope) AS size
			), ids AS (`+rememberDeletedSQL+`
			), u AS (
				UPDATE inbox_counters SET
					msg_count = msg_count - (SELECT count(*) FROM d),
					msg_bytes = msg_bytes - (SELECT coalesce(sum(size), 0) FROM d)
				WHERE handle = $1
			)
			SELECT (SELECT count(*) FROM d),
				coalesce((SELECT min(seq) FROM messages WHERE recipient = $1 AND seq > $2), 0)`,
			to, through).Scan(&d.Count, &d.Oldest)
		return d, err
	})
	if err != nil {
		return store.Deleted{}, fmt.Errorf("delete messages: %w", err)
	}
	return d, nil
}

// DeleteSentBefore deletes up to limit of the deployment's messages sent
// before `before`, oldest first, and returns how many it deleted. Retention
// calls it in a loop, so that each transaction, and the locks it holds on
// the inboxes it touches, stays short. While another process runs a batch
// it deletes nothing and returns 0.
func (db *DB) DeleteSentBefore(ctx context.Context, before time.Time, limit int) (int64, error) {
	n, err := inTx(ctx, db, func(tx pgx.Tx) (int64, error) {
		var mine bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, retentionLock).Scan(&mine); err != nil || !mine {
			return 0, err
		}
		rows, err := tx.Query(ctx, `
			SELECT handle FROM inbox_counters WHERE handle IN (
				SELECT recipient FROM messages WHERE sent_at < $1 ORDER BY sent_at LIMIT $2)
			ORDER BY handle FOR UPDATE`, before, limit)
		if err != nil {
			return 0, err
		}
		inboxes, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(inboxes) == 0 {
			return 0, err
		}
		// A new snapshot, taken with the locks held: only the locked
		// inboxes are touched, so this cannot deadlock with an append.
		var n int64
		err = tx.QueryRow(ctx, `
			WITH v AS (
				SELECT recipient, seq FROM messages
				WHERE sent_at < $1 AND recipient = ANY ($3::text[]) ORDER BY sent_at LIMIT $2
			), d AS (
				DELETE FROM messages m USING v WHERE m.recipient = v.recipient AND m.seq = v.seq
				RETURNING m.sender, m.client_id, m.recipient, m.seq, m.sent_at, octet_length(m.envelope) AS size
			), ids AS (`+rememberDeletedSQL+`
			), u AS (
				UPDATE inbox_counters c SET msg_count = c.msg_count - s.n, msg_bytes = c.msg_bytes - s.b
				FROM (SELECT recipient, count(*) AS n, sum(size) AS b FROM d GROUP BY recipient) s
				WHERE c.handle = s.recipient
			)
			SELECT count(*) FROM d`, before, limit, inboxes).Scan(&n)
		return n, err
	})
	if err != nil {
		return 0, fmt.Errorf("delete expired: %w", err)
	}
	return n, nil
}

// ForgetDeletedIDs forgets up to limit of the (sender, id) pairs of
// messages deleted before `before`, oldest first, and returns how many it
// forgot: a retry of one of them is a new message from then on. Retention
// calls it in a loop, as it does DeleteSentBefore; while another process
// runs a batch it forgets nothing and returns 0.
func (db *DB) ForgetDeletedIDs(ctx context.Context, before time.Time, limit int) (int64, error) {
	n, err := inTx(ctx, db, func(tx pgx.Tx) (int64, error) {
		var mine bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock($1)`, forgetLock).Scan(&mine); err != nil || !mine {
			return 0, err
		}
		// deleted_at again outside the subquery: a pair that a delete
		// records anew while this waits for its row is re-read with its
		// new deleted_at, and kept.
		tag, err := tx.Exec(ctx, `
			DELETE FROM deleted_ids WHERE deleted_at < $1 AND (sender, client_id) IN (
				SELECT sender, client_id FROM deleted_ids WHERE deleted_at < $1 ORDER BY deleted_at LIMIT $2)`,
			before, limit)
		return tag.RowsAffected(), err
	})
	if err != nil {
		return 0, fmt.Errorf("forget deleted ids: %w", err)
	}
	return n, nil
}
