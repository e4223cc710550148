package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// SharedSecret returns the deployment secret called name, storing candidate
// as its value if there is none yet. Every caller, in any process sharing the
// database, gets the same value: the first to store wins.
func (db *DB) SharedSecret(ctx context.Context, name, candidate string) (string, error) {
	// A concurrent first insert makes ours do nothing but commits after
	// this statement's snapshot, so that the SELECT cannot see it either:
	// then the statement returns no row, and running it again finds it.
	for attempt := 0; ; attempt++ {
		v, err := db.sharedSecret(ctx, name, candidate)
		if errors.Is(err, pgx.ErrNoRows) && attempt < 3 {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("shared secret: %w", translate(err))
		}
		return v, nil
	}
}

func (db *DB) sharedSecret(ctx context.Context, name, candidate string) (string, error) {
	var v string
	err := db.pool.QueryRow(ctx, `
		WITH ins AS (
			INSERT INTO deployment_secrets (name, value) VALUES ($1, $2)
			ON CONFLICT (name) DO NOTHING
			RETURNING value
		)
		SELECT value FROM ins
		UNION ALL
		SELECT value FROM deployment_secrets WHERE name = $1
		LIMIT 1`, name, candidate).Scan(&v)
	return v, err
}
