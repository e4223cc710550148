// Package postgres is the production store: Postgres through a pgx v5 pool,
// shared by any number of kezd processes. Appends are group-committed: the
// sends in flight in this process share one transaction and one fsync (see
// append.go). Errors are translated here, so nothing above the store imports
// pgx.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kez-chat/kezd/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is the pg_advisory_lock key that serialises migrations
// between kezd processes starting at once.
const migrationLock = 0x6b657a64 // "kezd"

// Config configures the store.
type Config struct {
	// URL is a postgres:// connection URL.
	URL string
	// MaxConns caps the pool; 0 means 16.
	MaxConns int32
	// CommitWorkers is how many group-commit batches may be in flight at
	// once; 0 means 1: the next batch fills while one commits. Measured on
	// 2 cores with 16 HTTP senders: 1 worker matched 2 across recipients and
	// beat it by 15% on one busy recipient (whose counter row a second
	// batch must wait for), and beat 3 everywhere.
	CommitWorkers int
	// MaxBatch caps the appends in one batch; 0 means 256.
	MaxBatch int
	// ConnectTimeout bounds dialling the server; 0 means 5s.
	ConnectTimeout time.Duration
}

// DB is the Postgres store. It is safe for concurrent use; Close it when done.
type DB struct {
	pool     *pgxpool.Pool
	log      *slog.Logger
	maxBatch int
	handles  handleCache

	nextBucketSweep atomic.Int64 // unix ns; see TakeTokens

	// Group commit: AppendMessage queues requests, committer workers take
	// whatever is queued and commit it as one transaction.
	mu      sync.RWMutex // guards closed against queueing
	closed  bool
	queue   chan *appendRequest
	closing chan struct{}
	workers sync.WaitGroup
	batches atomic.Int64 // transactions the committer ran for appends
	appends atomic.Int64 // the appends in them

	// Point reads of every stream open, batched (readbatch.go).
	handleReads *readBatch[store.Handle]
	latestReads *readBatch[int64]
}

// BatchStats counts what the group committer has done since Open.
type BatchStats struct {
	Batches int64 // batches committed (or attempted)
	Appends int64 // appends they carried; Appends/Batches is the mean batch size
}

// BatchStats says how many batches the group committer has run and how many
// appends they carried, so that a bench can report batch sizes.
func (db *DB) BatchStats() BatchStats {
	return BatchStats{Batches: db.batches.Load(), Appends: db.appends.Load()}
}

// Open connects to Postgres, applies pending migrations, and starts the
// group committer. An unreachable server is store.ErrUnavailable.
func Open(ctx context.Context, cfg Config, log *slog.Logger) (*DB, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		// The URL may hold a password; do not echo it.
		return nil, errors.New("open postgres: invalid database URL")
	}
	pcfg.MaxConns = cfg.MaxConns
	if pcfg.MaxConns <= 0 {
		pcfg.MaxConns = 16
	}
	pcfg.ConnConfig.ConnectTimeout = cfg.ConnectTimeout
	if pcfg.ConnConfig.ConnectTimeout <= 0 {
		pcfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	// Every statement here is written to be index probes whatever the
	// arguments (the append's lookups are LATERAL ... LIMIT 1 rather than
	// joins a planner could turn into scans), so plan each prepared
	// statement once per connection: planning the append for its arguments
	// every time cost more than executing it.
	pcfg.ConnConfig.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	pcfg.AfterConnect = registerEnvelopes
	workers := cfg.CommitWorkers
	if workers <= 0 {
		workers = 1
	}
	maxBatch := cfg.MaxBatch
	if maxBatch <= 0 {
		maxBatch = 256
	}

	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", translate(err))
	}
	if err := migrate(ctx, pool, log); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}

	db := &DB{
		pool:     pool,
		log:      log,
		maxBatch: maxBatch,
		queue:    make(chan *appendRequest, 4*maxBatch),
		closing:  make(chan struct{}),
	}
	for range workers {
		db.workers.Go(db.commitLoop)
	}
	db.handleReads = newReadBatch(db.queryHandles)
	db.latestReads = newReadBatch(db.queryLatestSeqs)
	return db, nil
}

// Close stops taking appends and reads, commits the appends already
// queued, waits for the committer, and closes the pool (which waits for the
// reads running).
func (db *DB) Close() error {
	db.mu.Lock()
	if db.closed {
		db.mu.Unlock()
		return nil
	}
	db.closed = true
	close(db.closing)
	db.mu.Unlock()
	db.workers.Wait()
	db.pool.Close()
	return nil
}

// Ping reports whether the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", translate(err))
	}
	return nil
}

// migrate applies the embedded migrations not yet recorded in
// schema_migrations, in order, each in its own transaction, holding an
// advisory lock so that processes starting together take turns.
func migrate(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", translate(err))
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return fmt.Errorf("migrate: %w", translate(err))
	}
	defer func() {
		// The lock is per session; if unlocking fails the connection is
		// broken, and the server releases the lock when it goes.
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock)
	}()

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    text        PRIMARY KEY,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("migrate: %w", translate(err))
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
		applied, err := apply(ctx, conn.Conn(), version, name)
		if err != nil {
			return fmt.Errorf("migrate %s: %w", version, translate(err))
		}
		if applied {
			log.Info("applied migration", "version", version)
		}
	}
	return nil
}

func apply(ctx context.Context, conn *pgx.Conn, version, name string) (bool, error) {
	script, err := migrations.ReadFile(name)
	if err != nil {
		return false, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var done bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)`, version).Scan(&done); err != nil {
		return false, err
	}
	if done {
		return false, nil
	}
	// A script holds several statements: run it with the simple protocol.
	if _, err := tx.Conn().PgConn().Exec(ctx, string(script)).ReadAll(); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version) VALUES ($1)`, version); err != nil {
		return false, err
	}
	return true, tx.Commit(ctx)
}

// CreateHandle registers h and returns it with CreatedAt set. It reports
// store.ErrHandleTaken or store.ErrKeyTaken when either is in use.
func (db *DB) CreateHandle(ctx context.Context, h store.Handle) (store.Handle, error) {
	// One statement, so the handle, its counter and its key history exist
	// together or not at all. signing_keys holds every key ever registered,
	// deleted handles' and retired ones included.
	err := db.pool.QueryRow(ctx, `
		WITH h AS (
			-- A taken name (a deleted handle's included) is reported as
			-- such even when the key is taken too: the name is checked first.
			INSERT INTO handles (handle, signing_key, encryption_key) VALUES ($1, $2, $3)
			ON CONFLICT (handle) DO NOTHING
			RETURNING handle, created_at
		), c AS (
			INSERT INTO inbox_counters (handle) SELECT handle FROM h
		), k AS (
			INSERT INTO signing_keys (signing_key, handle) SELECT $2, handle FROM h
		), kh AS (
			INSERT INTO key_history (handle, signing_key, encryption_key, valid_from)
			SELECT handle, $2, $3, created_at FROM h
		)
		SELECT created_at FROM h`,
		h.Handle, h.SigningKey, h.EncryptionKey).Scan(&h.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Handle{}, fmt.Errorf("create handle: %w", store.ErrHandleTaken)
	}
	if err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", translate(err))
	}
	h.CreatedAt = h.CreatedAt.UTC()
	return h, nil
}

// Handle returns a registered handle, or store.ErrNotFound (also for a
// deleted one). Handles are cached for handleCacheTTL; RotateKeys,
// DeleteHandle and ForgetHandle drop the entry.
func (db *DB) Handle(ctx context.Context, handle string) (store.Handle, error) {
	if h, ok := db.handles.get(handle, time.Now()); ok {
		return h, nil
	}
	h, found, err := db.handleReads.get(ctx, db, handle)
	if err != nil {
		return store.Handle{}, fmt.Errorf("handle: %w", err)
	}
	if !found {
		return store.Handle{}, fmt.Errorf("handle: %w", store.ErrNotFound)
	}
	db.handles.put(h, time.Now())
	return h, nil
}

// HandleByKey returns the handle whose signing key is signingKey, or
// store.ErrNotFound.
func (db *DB) HandleByKey(ctx context.Context, signingKey string) (store.Handle, error) {
	h, err := db.findHandle(ctx, `signing_key = $1`, signingKey)
	if err != nil {
		return store.Handle{}, fmt.Errorf("handle by key: %w", err)
	}
	return h, nil
}

func (db *DB) findHandle(ctx context.Context, where, arg string) (store.Handle, error) {
	var h store.Handle
	err := db.pool.QueryRow(ctx,
		`SELECT handle, signing_key, encryption_key, created_at FROM handles WHERE deleted_at IS NULL AND `+where, arg).
		Scan(&h.Handle, &h.SigningKey, &h.EncryptionKey, &h.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Handle{}, store.ErrNotFound
	}
	if err != nil {
		return store.Handle{}, translate(err)
	}
	h.CreatedAt = h.CreatedAt.UTC()
	return h, nil
}

// ListMessages returns the messages to `to` with seq > since, ascending, at
// most limit of them.
func (db *DB) ListMessages(ctx context.Context, to string, since int64, limit int) ([]store.Message, error) {
	return db.ListMessagesUpTo(ctx, to, since, limit, 0)
}

// ListMessagesUpTo is ListMessages that also stops before the message that
// would take the envelopes returned past maxBytes, but always returns at
// least one message when there is one. maxBytes <= 0 means no bound.
func (db *DB) ListMessagesUpTo(ctx context.Context, to string, since int64, limit, maxBytes int) ([]store.Message, error) {
	if maxBytes <= 0 {
		maxBytes = math.MaxInt64
	}
	// The running sum reads only the envelopes' sizes (octet_length does not
	// detoast); the envelopes past the bound are never fetched.
	rows, err := db.pool.Query(ctx, `
		SELECT seq, sender, recipient, client_id, envelope, sent_at FROM (
			SELECT seq, sender, recipient, client_id, envelope, sent_at,
				sum(octet_length(envelope)) OVER (ORDER BY seq) AS upto
			FROM messages WHERE recipient = $1 AND seq > $2 ORDER BY seq LIMIT $3) p
		WHERE upto <= $4 OR upto = octet_length(envelope)
		ORDER BY seq`, to, since, limit, int64(maxBytes))
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", translate(err))
	}
	ms, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", translate(err))
	}
	if ms == nil {
		ms = []store.Message{}
	}
	return ms, nil
}

// LatestSeq returns the highest seq ever stored for `to` (deleted messages
// included), 0 when there is none.
func (db *DB) LatestSeq(ctx context.Context, to string) (int64, error) {
	// A missing counter row is an inbox with nothing yet: 0.
	seq, _, err := db.latestReads.get(ctx, db, to)
	if err != nil {
		return 0, fmt.Errorf("latest seq: %w", err)
	}
	return seq, nil
}

// sentSQL finds the message stored under (sender, client id), or deleted
// since within the dedup window while its recipient exists (see
// deleted_ids): its seq, recipient and sent_at.
const sentSQL = `
	SELECT seq, recipient, sent_at FROM messages WHERE sender = $1 AND client_id = $2
	UNION ALL
	SELECT d.seq, d.recipient, d.sent_at FROM deleted_ids d
	WHERE d.sender = $1 AND d.client_id = $2 AND EXISTS (SELECT 1 FROM inbox_counters c WHERE c.handle = d.recipient)
	LIMIT 1`

// Sent returns the message from `from` with client id id that an append
// would answer as a duplicate, without its envelope; store.ErrNotFound if
// there is none.
func (db *DB) Sent(ctx context.Context, from, id string) (store.Message, error) {
	m := store.Message{From: from, ID: id}
	err := db.pool.QueryRow(ctx, sentSQL, from, id).Scan(&m.Seq, &m.To, &m.SentAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Message{}, store.ErrNotFound
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("sent message: %w", translate(err))
	}
	m.SentAt = m.SentAt.UTC()
	return m, nil
}

func scanMessage(row pgx.CollectableRow) (store.Message, error) {
	var m store.Message
	var env []byte
	if err := row.Scan(&m.Seq, &m.From, &m.To, &m.ID, &env, &m.SentAt); err != nil {
		return store.Message{}, err
	}
	m.Envelope = env
	m.SentAt = m.SentAt.UTC()
	return m, nil
}
