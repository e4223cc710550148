package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kez-chat/kezd/store"
)

// RotateKeys replaces handle's keys with h's signing and encryption keys,
// provided its signing key is still current (else store.ErrKeyChanged). A
// new signing key that any handle has ever had is store.ErrKeyTaken;
// repeating the current one changes only the encryption key. The key set it
// replaces stays in the key history.
func (db *DB) RotateKeys(ctx context.Context, handle, current string, h store.Handle) (store.Handle, error) {
	out, err := inTx(ctx, db, func(tx *sql.Tx) (store.Handle, error) {
		cur, err := currentHandle(ctx, tx, handle, current)
		if err != nil {
			return store.Handle{}, err
		}
		if h.SigningKey != cur.SigningKey {
			if _, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (signing_key, handle) VALUES (?, ?)`, h.SigningKey, handle); err != nil {
				return store.Handle{}, translate(err)
			}
		}
		at := now().UnixMicro()
		if _, err := tx.ExecContext(ctx, `UPDATE key_history SET valid_until = ? WHERE handle = ? AND valid_until IS NULL`, at, handle); err != nil {
			return store.Handle{}, wrapUnavailable(err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO key_history (handle, signing_key, encryption_key, valid_from) VALUES (?, ?, ?, ?)`,
			handle, h.SigningKey, h.EncryptionKey, at); err != nil {
			return store.Handle{}, wrapUnavailable(err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE handles SET signing_key = ?, encryption_key = ? WHERE handle = ?`,
			h.SigningKey, h.EncryptionKey, handle); err != nil {
			return store.Handle{}, translate(err)
		}
		cur.SigningKey, cur.EncryptionKey = h.SigningKey, h.EncryptionKey
		return cur, nil
	})
	if err != nil {
		return store.Handle{}, fmt.Errorf("rotate keys: %w", err)
	}
	return out, nil
}

// DeleteHandle deletes handle, provided its signing key is still current
// (else store.ErrKeyChanged), with every message in its inbox. The name and
// every key it had stay reserved. SQLite has one writer, so no send can
// fall between removing the inbox's counter (after which a send finds no
// recipient) and its messages.
func (db *DB) DeleteHandle(ctx context.Context, handle, current string) (time.Time, error) {
	at, err := inTx(ctx, db, func(tx *sql.Tx) (time.Time, error) {
		if _, err := currentHandle(ctx, tx, handle, current); err != nil {
			return time.Time{}, err
		}
		at := now()
		for _, q := range []string{
			`DELETE FROM inbox_counters WHERE handle = ?1`,
			`DELETE FROM messages WHERE recipient = ?1`,
			`UPDATE key_history SET valid_until = ?2 WHERE handle = ?1 AND valid_until IS NULL`,
			`UPDATE handles SET deleted_at = ?2 WHERE handle = ?1`,
		} {
			if _, err := tx.ExecContext(ctx, q, handle, at.UnixMicro()); err != nil {
				return time.Time{}, wrapUnavailable(err)
			}
		}
		return at, nil
	})
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
	var created int64
	us := at.UnixMicro()
	err := db.read.QueryRowContext(ctx, `
		SELECT h.handle, k.signing_key, k.encryption_key, h.created_at
		FROM handles h JOIN key_history k ON k.handle = h.handle
		WHERE h.handle = ? AND h.deleted_at IS NULL
		  AND k.valid_from <= ? AND (k.valid_until IS NULL OR k.valid_until > ?)
		ORDER BY k.valid_from DESC LIMIT 1`, handle, us, us).
		Scan(&h.Handle, &h.SigningKey, &h.EncryptionKey, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Handle{}, fmt.Errorf("handle at: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.Handle{}, fmt.Errorf("handle at: %w", wrapUnavailable(err))
	}
	h.CreatedAt = fromMicros(created)
	return h, nil
}

// ForgetHandle does nothing: this store caches no handles. It is there so
// that both stores serve the core alike.
func (db *DB) ForgetHandle(string) {}

// currentHandle returns handle inside tx, provided it is not deleted
// (store.ErrNotFound) and its signing key is current (else
// store.ErrKeyChanged). The write transaction is the only writer, so what it
// reads cannot change under it.
func currentHandle(ctx context.Context, tx *sql.Tx, handle, current string) (store.Handle, error) {
	var h store.Handle
	var created int64
	err := tx.QueryRowContext(ctx,
		`SELECT handle, signing_key, encryption_key, created_at FROM handles WHERE handle = ? AND deleted_at IS NULL`, handle).
		Scan(&h.Handle, &h.SigningKey, &h.EncryptionKey, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Handle{}, store.ErrNotFound
	}
	if err != nil {
		return store.Handle{}, wrapUnavailable(err)
	}
	if h.SigningKey != current {
		return store.Handle{}, store.ErrKeyChanged
	}
	h.CreatedAt = fromMicros(created)
	return h, nil
}

// inTx runs fn in a write transaction and commits it.
func inTx[T any](ctx context.Context, db *DB, fn func(*sql.Tx) (T, error)) (T, error) {
	var zero T
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return zero, wrapUnavailable(err)
	}
	defer tx.Rollback()
	v, err := fn(tx)
	if err != nil {
		return zero, err
	}
	if err := tx.Commit(); err != nil {
		return zero, wrapUnavailable(err)
	}
	return v, nil
}
