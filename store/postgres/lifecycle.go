package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/store"
)

// RotateKeys replaces handle's keys with h's signing and encryption keys,
// provided its signing key is still current (else store.ErrKeyChanged: a
// rotation or deletion came first). A new signing key that any handle has
// ever had is store.ErrKeyTaken; repeating the current one changes only the
// encryption key. The key set it replaces stays in the key history.
func (db *DB) RotateKeys(ctx context.Context, handle, current string, h store.Handle) (store.Handle, error) {
	out, err := inTx(ctx, db, func(tx pgx.Tx) (store.Handle, error) {
		cur, err := lockHandle(ctx, tx, handle, current)
		if err != nil {
			return store.Handle{}, err
		}
		if h.SigningKey != cur.SigningKey {
			if _, err := tx.Exec(ctx, `INSERT INTO signing_keys (signing_key, handle) VALUES ($1, $2)`, h.SigningKey, handle); err != nil {
				return store.Handle{}, err
			}
		}
		if _, err := tx.Exec(ctx, `
			WITH old AS (
				UPDATE key_history SET valid_until = now() WHERE handle = $1 AND valid_until IS NULL
			)
			INSERT INTO key_history (handle, signing_key, encryption_key, valid_from) VALUES ($1, $2, $3, now())`,
			handle, h.SigningKey, h.EncryptionKey); err != nil {
			return store.Handle{}, err
		}
		if _, err := tx.Exec(ctx, `UPDATE handles SET signing_key = $2, encryption_key = $3 WHERE handle = $1`,
			handle, h.SigningKey, h.EncryptionKey); err != nil {
			return store.Handle{}, err
		}
		cur.SigningKey, cur.EncryptionKey = h.SigningKey, h.EncryptionKey
		return cur, nil
	})
	db.handles.forget(handle)
	if err != nil {
		return store.Handle{}, fmt.Errorf("rotate keys: %w", err)
	}
	return out, nil
}

// DeleteHandle deletes handle, provided its signing key is still current
// (else store.ErrKeyChanged), with every message in its inbox. The name and
// every key it had stay reserved. It returns when the deletion happened.
//
// A send racing the deletion is stored before it, and deleted with the
// inbox, or finds no recipient: the deletion removes the inbox's counter row
// first, which every append locks, and only then the messages, in a
// statement that sees every append that held the lock before it.
func (db *DB) DeleteHandle(ctx context.Context, handle, current string) (time.Time, error) {
	at, err := inTx(ctx, db, func(tx pgx.Tx) (time.Time, error) {
		if _, err := lockHandle(ctx, tx, handle, current); err != nil {
			return time.Time{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM inbox_counters WHERE handle = $1`, handle); err != nil {
			return time.Time{}, err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM messages WHERE recipient = $1`, handle); err != nil {
			return time.Time{}, err
		}
		var at time.Time
		err := tx.QueryRow(ctx, `
			WITH old AS (
				UPDATE key_history SET valid_until = now() WHERE handle = $1 AND valid_until IS NULL
			)
			UPDATE handles SET deleted_at = now() WHERE handle = $1 RETURNING deleted_at`, handle).Scan(&at)
		return at.UTC(), err
	})
	db.handles.forget(handle)
	if err != nil {
		return time.Time{}, fmt.Errorf("delete handle: %w", err)
	}
	return at, nil
}

// HandleAt returns handle with the keys it had at time at: those of its key
// history valid then. A deleted handle, or a time before the handle
// existed, is store.ErrNotFound.
func (db *DB) HandleAt(ctx context.Context, handle string, at time.Time) (store.Handle, error) {
	var h store.Handle
	err := db.pool.QueryRow(ctx, `
		SELECT h.handle, k.signing_key, k.encryption_key, h.created_at
		FROM handles h JOIN key_history k ON k.handle = h.handle
		WHERE h.handle = $1 AND h.deleted_at IS NULL
		  AND k.valid_from <= $2 AND (k.valid_until IS NULL OR k.valid_until > $2)
		ORDER BY k.valid_from DESC LIMIT 1`, handle, at).
		Scan(&h.Handle, &h.SigningKey, &h.EncryptionKey, &h.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Handle{}, fmt.Errorf("handle at: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Handle{}, fmt.Errorf("handle at: %w", translate(err))
	}
	h.CreatedAt = h.CreatedAt.UTC()
	return h, nil
}

// ForgetHandle drops handle from this process's cache, so that the next
// lookup reads the database: another process changed or deleted it.
func (db *DB) ForgetHandle(handle string) { db.handles.forget(handle) }

// lockHandle locks handle's row for the transaction and returns it, provided
// it is not deleted (store.ErrNotFound) and its signing key is current.
func lockHandle(ctx context.Context, tx pgx.Tx, handle, current string) (store.Handle, error) {
	var h store.Handle
	err := tx.QueryRow(ctx, `
		SELECT handle, signing_key, encryption_key, created_at FROM handles
		WHERE handle = $1 AND deleted_at IS NULL FOR UPDATE`, handle).
		Scan(&h.Handle, &h.SigningKey, &h.EncryptionKey, &h.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Handle{}, store.ErrNotFound
	}
	if err != nil {
		return store.Handle{}, err
	}
	if h.SigningKey != current {
		return store.Handle{}, store.ErrKeyChanged
	}
	h.CreatedAt = h.CreatedAt.UTC()
	return h, nil
}

// inTx runs fn in a transaction and commits it; errors are translated.
func inTx[T any](ctx context.Context, db *DB, fn func(pgx.Tx) (T, error)) (T, error) {
	var zero T
	tx, err := db.pool.Begin(ctx)
	if err != nil {
		return zero, translate(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	v, err := fn(tx)
	if err != nil {
		return zero, translateKeep(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return zero, translate(err)
	}
	return v, nil
}

// translateKeep is translate for errors that may already be the store's.
func translateKeep(err error) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrKeyChanged) {
		return err
	}
	return translate(err)
}
