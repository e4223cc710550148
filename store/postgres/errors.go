package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kez-chat/kezd/store"
)

// translate maps a pgx error to the store's vocabulary: unique violations to
// ErrHandleTaken/ErrKeyTaken, anything meaning "the database could not be
// reached or could not take the write" to a wrapped ErrUnavailable.
func translate(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		switch pgErr.ConstraintName {
		case "handles_pkey", "inbox_counters_pkey":
			return store.ErrHandleTaken
		case "handles_signing_key_key", "signing_keys_pkey":
			return store.ErrKeyTaken
		}
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	if unavailable(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

func unavailable(err error) bool {
	if errors.Is(err, store.ErrUnavailable) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources: too many connections, disk full
			strings.HasPrefix(pgErr.Code, "57"),          // operator intervention: shutdown, cannot connect now, timeouts
			strings.HasPrefix(pgErr.Code, "58"),          // system error: I/O
			pgErr.Code == "40001", pgErr.Code == "40P01", // serialization failure, deadlock (after our retries)
			pgErr.Code == "25006": // read-only transaction: a standby
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connErr), errors.As(err, &netErr),
		errors.Is(err, context.DeadlineExceeded), pgconn.Timeout(err), pgconn.SafeToRetry(err),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	}
	// pgx reports a closed pool or connection with plain errors.
	msg := err.Error()
	return strings.Contains(msg, "closed pool") || strings.Contains(msg, "conn closed")
}
