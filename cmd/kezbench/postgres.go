package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kez-chat/kezd/store/pgtest"
)

// database is a fresh database for one bench run, on the server the
// caller named or on a throwaway cluster; drop removes it (and the cluster).
type database struct {
	URL  string
	drop func() error
}

// openDatabase creates the run's database on the server at serverURL, or
// on a throwaway durable cluster (fsync on, the tests' harness) when
// serverURL is empty.
func openDatabase(ctx context.Context, serverURL string) (*database, error) {
	stop := func() error { return nil }
	if serverURL == "" {
		c, err := pgtest.StartCluster()
		if err != nil {
			return nil, fmt.Errorf("%w (or set %s)", err, envDatabaseURL)
		}
		serverURL, stop = c.URL(), c.Stop
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "kezbench_" + hex.EncodeToString(b[:])
	u, err := pgtest.CreateDatabase(ctx, serverURL, name)
	if err != nil {
		return nil, errors.Join(err, stop())
	}
	return &database{URL: u, drop: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return errors.Join(pgtest.DropDatabase(ctx, serverURL, name), stop())
	}}, nil
}
