package sqlite

import (
	"context"
	"fmt"
)

// SharedSecret returns the deployment secret called name, storing candidate
// as its value if there is none yet; the first to store wins.
func (db *DB) SharedSecret(ctx context.Context, name, candidate string) (string, error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("shared secret: %w", wrapUnavailable(err))
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `INSERT INTO deployment_secrets (name, value, created_at) VALUES (?, ?, ?)
		ON CONFLICT (name) DO NOTHING`, name, candidate, now().UnixMicro()); err != nil {
		return "", fmt.Errorf("shared secret: %w", wrapUnavailable(err))
	}
	var v string
	if err := tx.QueryRowContext(ctx, `SELECT value FROM deployment_secrets WHERE name = ?`, name).Scan(&v); err != nil {
		return "", fmt.Errorf("shared secret: %w", wrapUnavailable(err))
	}
	if err := tx.Commit(); err != nil {
		return "", fmt.Errorf("shared secret: %w", wrapUnavailable(err))
	}
	return v, nil
}
