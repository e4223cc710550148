package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultLeaseTTL is how long a stream lease lasts unless its instance
// renews it; instances renew theirs every third of it.
const DefaultLeaseTTL = 30 * time.Second

// Leases counts open streams and long-polls across every instance on the
// database (package httpapi's shared caps): one row per open one, renewed
// by this instance while it is open, so that a killed instance's leases
// expire within the TTL. Create it with NewLeases and Run it.
type Leases struct {
	db  *DB
	ttl time.Duration
	log *slog.Logger

	mu   sync.Mutex
	mine map[int64]struct{} // leases this instance holds and renews
}

// NewLeases returns the deployment's stream leases in db; ttl 0 means
// DefaultLeaseTTL.
func NewLeases(db *DB, ttl time.Duration, log *slog.Logger) *Leases {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Leases{db: db, ttl: ttl, log: log, mine: map[int64]struct{}{}}
}

// AcquireLease takes one lease of kind for handle and ip when fewer than
// perHandle are open for handle and fewer than perIP for ip, in the whole
// deployment, in one round trip. ok false says which cap refused it
// (handleOpen >= perHandle, or else ipOpen >= perIP). perIP 0 or less is no
// per-IP cap: ip's leases are neither counted (ipOpen is 0) nor locked, so
// that acquires from one address do not wait for each other.
func (l *Leases) AcquireLease(ctx context.Context, kind, handle, ip string, perHandle, perIP int) (id int64, handleOpen, ipOpen int, ok bool, err error) {
	var ipCap *int // NULL: no per-IP cap
	if perIP > 0 {
		ipCap = &perIP
	}
	var lease *int64
	if err := l.db.pool.QueryRow(ctx, `SELECT lease_id, handle_open, ip_open FROM acquire_lease($1, $2, $3, $4, $5, $6)`,
		kind, handle, ip, perHandle, ipCap, l.ttl.Milliseconds()).Scan(&lease, &handleOpen, &ipOpen); err != nil {
		return 0, 0, 0, false, fmt.Errorf("acquire stream lease: %w", translate(err))
	}
	if lease == nil {
		return 0, handleOpen, ipOpen, false, nil
	}
	l.mu.Lock()
	l.mine[*lease] = struct{}{}
	l.mu.Unlock()
	return *lease, handleOpen, ipOpen, true, nil
}

// ReleaseLease ends lease id. If the delete fails, the lease is no longer
// renewed and expires within the TTL.
func (l *Leases) ReleaseLease(ctx context.Context, id int64) error {
	return l.ReleaseLeases(ctx, []int64{id})
}

// ReleaseLeases ends the leases ids in one statement. If the delete fails,
// they are no longer renewed and expire within the TTL.
func (l *Leases) ReleaseLeases(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	l.mu.Lock()
	for _, id := range ids {
		delete(l.mine, id)
	}
	l.mu.Unlock()
	if _, err := l.db.pool.Exec(ctx, `DELETE FROM stream_leases WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("release stream leases: %w", translate(err))
	}
	return nil
}

// Run renews this instance's leases every third of the TTL and deletes
// expired ones (any instance's), until ctx ends. A failed renewal is
// retried at the next tick; leases it missed may expire meanwhile, which
// only lets a client open one more than the cap for a while.
func (l *Leases) Run(ctx context.Context) {
	t := time.NewTicker(l.ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := l.renew(ctx); err != nil && ctx.Err() == nil {
			l.log.Warn("renewing stream leases", "err", err)
		}
	}
}

func (l *Leases) renew(ctx context.Context) error {
	l.mu.Lock()
	ids := make([]int64, 0, len(l.mine))
	for id := range l.mine {
		ids = append(ids, id)
	}
	l.mu.Unlock()
	if len(ids) > 0 {
		if _, err := l.db.pool.Exec(ctx, `UPDATE stream_leases SET expires_at = clock_timestamp() + $2 * interval '1 millisecond' WHERE id = ANY($1)`,
			ids, l.ttl.Milliseconds()); err != nil {
			return translate(err)
		}
	}
	_, err := l.db.pool.Exec(ctx, `DELETE FROM stream_leases WHERE expires_at < clock_timestamp()`)
	return translate(err)
}
