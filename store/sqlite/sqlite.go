// Package sqlite is the embedded store: one SQLite file in the data
// directory, for a single kezd with no external service. It uses
// modernc.org/sqlite (pure Go, no cgo). Several kezd processes must use
// store/postgres instead.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/kez-chat/kezd/store"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is the SQLite store. SQLite takes one writer at a time, so writes go
// through a pool of one connection (queueing in Go rather than spinning on
// SQLITE_BUSY) and reads through a separate pool.
type DB struct {
	write *sql.DB
	read  *sql.DB

	sweeping sync.Mutex // the outbox sweep's lease: one process, one sweep at a time
}

// Open opens (creating if needed) the database file at path and applies any
// pending migrations.
func Open(ctx context.Context, path string) (*DB, error) {
	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "journal_mode(WAL)")
		// FULL: a message is durable before the sender hears it was stored.
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", "foreign_keys(ON)")
		for _, e := range extra {
			q.Add("_pragma", e)
		}
		q.Set("_txlock", "immediate")
		return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	}
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	write, err := sql.Open("sqlite", dsn())
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)

	db := &DB{write: write}
	if err := db.migrate(ctx); err != nil {
		write.Close()
		return nil, err
	}

	read, err := sql.Open("sqlite", dsn("query_only(ON)"))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	db.read = read
	return db, nil
}

// createPrivate creates the database file and the WAL files SQLite would
// create beside it, readable by kezd's user only (they hold every message
// and key), whatever the directory's mode. SQLite's own default is 0644,
// and it keeps the mode of files that exist. Files that exist already are
// left as the operator made them.
func createPrivate(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the database.
func (db *DB) Close() error {
	return errors.Join(db.read.Close(), db.write.Close())
}

// Ping reports whether the database answers.
func (db *DB) Ping(ctx context.Context) error {
	if err := db.read.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", wrapUnavailable(err))
	}
	return nil
}

// migrate applies the embedded migrations that are not yet recorded in
// schema_migrations, in order, each in its own transaction.
func (db *DB) migrate(ctx context.Context) error {
	if _, err := db.write.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    TEXT    NOT NULL PRIMARY KEY,
		applied_at INTEGER NOT NULL
	)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	sort.Strings(names)
	for _, name := range names {
		version := strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql")
		if err := db.apply(ctx, version, name); err != nil {
			return fmt.Errorf("migrate %s: %w", version, err)
		}
	}
	return nil
}

func (db *DB) apply(ctx context.Context, version, name string) error {
	script, err := migrations.ReadFile(name)
	if err != nil {
		return err
	}
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, version).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, string(script)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`,
		version, time.Now().UnixMicro()); err != nil {
		return err
	}
	return tx.Commit()
}

// now is the store's clock, at the precision it keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

// CreateHandle registers h and returns it with CreatedAt set. It reports
// store.ErrHandleTaken or store.ErrKeyTaken when either is in use.
func (db *DB) CreateHandle(ctx context.Context, h store.Handle) (store.Handle, error) {
	h.CreatedAt = now()
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", wrapUnavailable(err))
	}
	defer tx.Rollback()
	// A taken name (a deleted handle's included) is reported as such even
	// when the key is taken too. The write transaction is the only writer.
	var taken int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM handles WHERE handle = ?`, h.Handle).Scan(&taken); err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", wrapUnavailable(err))
	}
	if taken > 0 {
		return store.Handle{}, fmt.Errorf("create handle: %w", store.ErrHandleTaken)
	}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO handles (handle, signing_key, encryption_key, created_at) VALUES (?, ?, ?, ?)`,
		h.Handle, h.SigningKey, h.EncryptionKey, h.CreatedAt.UnixMicro()); err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", translate(err))
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO inbox_counters (handle) VALUES (?)`, h.Handle); err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", translate(err))
	}
	// Every key ever registered, deleted handles' and retired ones included.
	if _, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (signing_key, handle) VALUES (?, ?)`, h.SigningKey, h.Handle); err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", translate(err))
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO key_history (handle, signing_key, encryption_key, valid_from) VALUES (?, ?, ?, ?)`,
		h.Handle, h.SigningKey, h.EncryptionKey, h.CreatedAt.UnixMicro()); err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", translate(err))
	}
	if err := tx.Commit(); err != nil {
		return store.Handle{}, fmt.Errorf("create handle: %w", translate(err))
	}
	return h, nil
}

// Handle returns a registered handle, or store.ErrNotFound (also for a
// deleted one).
func (db *DB) Handle(ctx context.Context, handle string) (store.Handle, error) {
	h, err := db.findHandle(ctx, `handle = ?`, handle)
	if err != nil {
		return store.Handle{}, fmt.Errorf("handle: %w", err)
	}
	return h, nil
}

// HandleByKey returns the handle whose signing key is signingKey, or
// store.ErrNotFound.
func (db *DB) HandleByKey(ctx context.Context, signingKey string) (store.Handle, error) {
	h, err := db.findHandle(ctx, `signing_key = ?`, signingKey)
	if err != nil {
		return store.Handle{}, fmt.Errorf("handle by key: %w", err)
	}
	return h, nil
}

func (db *DB) findHandle(ctx context.Context, where string, arg string) (store.Handle, error) {
	var h store.Handle
	var created int64
	err := db.read.QueryRowContext(ctx,
		`SELECT handle, signing_key, encryption_key, created_at FROM handles WHERE deleted_at IS NULL AND `+where, arg).
		Scan(&h.Handle, &h.SigningKey, &h.EncryptionKey, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Handle{}, store.ErrNotFound
	}
	if err != nil {
		return store.Handle{}, wrapUnavailable(err)
	}
	h.CreatedAt = fromMicros(created)
	return h, nil
}

// AppendMessage stores m with the recipient's next seq. A message whose
// (From, ID) is already stored, or was and has been deleted within the dedup
// window (see deleted_ids), is not stored again: the original comes back
// with Duplicate set. An unknown recipient is store.ErrNotFound; a message
// that would take the inbox past m.Quota is store.ErrInboxFull, with nothing
// stored.
func (db *DB) AppendMessage(ctx context.Context, m store.NewMessage) (store.Appended, error) {
	// Postgres cannot hold such text; refuse it here too, so both backends
	// behave alike.
	if !utf8.Valid(m.Envelope) {
		return store.Appended{}, errors.New("append message: envelope is not valid UTF-8")
	}
	a, err := db.appendMessage(ctx, m)
	if err != nil {
		return store.Appended{}, fmt.Errorf("append message: %w", err)
	}
	return a, nil
}

func (db *DB) appendMessage(ctx context.Context, m store.NewMessage) (store.Appended, error) {
	// The write pool has one connection and every transaction starts with
	// BEGIN IMMEDIATE, so this transaction is the only writer: the
	// duplicate check and the seq allocation cannot race.
	//
	// Waiting for the writer honours the caller's ctx: nothing is stored
	// yet. Once the transaction starts it runs to its end whatever becomes
	// of the caller, so that an error always means "not stored".
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return store.Appended{}, wrapUnavailable(err)
	}
	defer conn.Close()
	ctx = context.WithoutCancel(ctx)
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return store.Appended{}, wrapUnavailable(err)
	}
	defer tx.Rollback()

	// The original, stored or (while its recipient exists) deleted since:
	// either way the duplicate. One query, as most sends have neither.
	orig := store.Message{From: m.From, ID: m.ID}
	var (
		env     sql.NullString
		sent    int64
		pending bool
	)
	err = tx.QueryRowContext(ctx, duplicateSQL, m.From, m.ID).Scan(&orig.Seq, &orig.To, &env, &sent, &pending)
	switch {
	case err == nil:
		if env.Valid {
			orig.Envelope = []byte(env.String)
		}
		orig.SentAt = fromMicros(sent)
		return store.Appended{Message: orig, Duplicate: true, Pending: pending}, nil
	case !errors.Is(err, sql.ErrNoRows):
		return store.Appended{}, wrapUnavailable(err)
	}

	var count, size int64
	err = tx.QueryRowContext(ctx, `SELECT msg_count, msg_bytes FROM inbox_counters WHERE handle = ?`, m.To).Scan(&count, &size)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Appended{}, store.ErrNotFound
	}
	if err != nil {
		return store.Appended{}, wrapUnavailable(err)
	}
	if q := m.Quota; (q.Messages > 0 && count+1 > q.Messages) || (q.Bytes > 0 && size+int64(len(m.Envelope)) > q.Bytes) {
		return store.Appended{}, store.ErrInboxFull
	}
	var seq int64
	err = tx.QueryRowContext(ctx, `
		UPDATE inbox_counters SET last_seq = last_seq + 1, msg_count = msg_count + 1, msg_bytes = msg_bytes + ?
		WHERE handle = ? RETURNING last_seq`, len(m.Envelope), m.To).Scan(&seq)
	if err != nil {
		return store.Appended{}, wrapUnavailable(err)
	}

	msg := store.Message{Seq: seq, From: m.From, To: m.To, ID: m.ID, Envelope: m.Envelope, SentAt: now()}
	if _, err := tx.ExecContext(ctx,
		`INSERT INTO messages (recipient, seq, sender, client_id, envelope, sent_at) VALUES (?, ?, ?, ?, ?, ?)`,
		msg.To, msg.Seq, msg.From, msg.ID, string(msg.Envelope), msg.SentAt.UnixMicro()); err != nil {
		return store.Appended{}, translate(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO outbox (recipient, seq, stored_at) VALUES (?, ?, ?)`,
		msg.To, msg.Seq, msg.SentAt.UnixMicro()); err != nil {
		return store.Appended{}, translate(err)
	}
	if err := tx.Commit(); err != nil {
		return store.Appended{}, wrapUnavailable(err)
	}
	return store.Appended{Message: msg, Pending: true}, nil
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
	// The running sum reads only the envelopes' sizes (octet_length does
	// not load a value); the envelopes past the bound are never read.
	rows, err := db.read.QueryContext(ctx, `
		SELECT m.seq, m.sender, m.recipient, m.client_id, m.envelope, m.sent_at FROM (
			SELECT seq, octet_length(envelope) AS size,
				sum(octet_length(envelope)) OVER (ORDER BY seq) AS upto
			FROM messages WHERE recipient = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3) p
		JOIN messages m ON m.recipient = ?1 AND m.seq = p.seq
		WHERE p.upto <= ?4 OR p.upto = p.size
		ORDER BY m.seq`, to, since, limit, int64(maxBytes))
	if err != nil {
		return nil, fmt.Errorf("list messages: %w", wrapUnavailable(err))
	}
	defer rows.Close()
	ms := []store.Message{}
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			return nil, fmt.Errorf("list messages: %w", wrapUnavailable(err))
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list messages: %w", wrapUnavailable(err))
	}
	return ms, nil
}

// LatestSeq returns the highest seq ever stored for `to` (deleted messages
// included: the counter, which deletions leave alone), 0 when there is none.
func (db *DB) LatestSeq(ctx context.Context, to string) (int64, error) {
	var seq int64
	err := db.read.QueryRowContext(ctx,
		`SELECT last_seq FROM inbox_counters WHERE handle = ?`, to).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("latest seq: %w", wrapUnavailable(err))
	}
	return seq, nil
}

// duplicateSQL finds what an append of (sender ?1, client id ?2) is the
// duplicate of: the message stored under them (its envelope, and whether
// its publish is unconfirmed), or one deleted since within the dedup window
// while its recipient exists (see deleted_ids), without either.
const duplicateSQL = `
	SELECT m.seq, m.recipient, m.envelope, m.sent_at,
		EXISTS (SELECT 1 FROM outbox o WHERE o.recipient = m.recipient AND o.seq = m.seq)
	FROM messages m WHERE m.sender = ?1 AND m.client_id = ?2
	UNION ALL
	SELECT d.seq, d.recipient, NULL, d.sent_at, 0 FROM deleted_ids d
	WHERE d.sender = ?1 AND d.client_id = ?2 AND EXISTS (SELECT 1 FROM inbox_counters c WHERE c.handle = d.recipient)
	LIMIT 1`

// Sent returns the message from `from` with client id id that an append
// would answer as a duplicate (stored, or deleted since within the dedup
// window while its recipient exists), without its envelope;
// store.ErrNotFound if there is none.
func (db *DB) Sent(ctx context.Context, from, id string) (store.Message, error) {
	m := store.Message{From: from, ID: id}
	var (
		env     sql.NullString
		sent    int64
		pending bool
	)
	err := db.read.QueryRowContext(ctx, duplicateSQL, from, id).Scan(&m.Seq, &m.To, &env, &sent, &pending)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Message{}, store.ErrNotFound
	}
	if err != nil {
		return store.Message{}, fmt.Errorf("sent message: %w", wrapUnavailable(err))
	}
	m.SentAt = fromMicros(sent)
	return m, nil
}

type scanner interface{ Scan(dest ...any) error }

func scanMessage(row scanner) (store.Message, error) {
	var m store.Message
	var env string
	var sent int64
	if err := row.Scan(&m.Seq, &m.From, &m.To, &m.ID, &env, &sent); err != nil {
		return store.Message{}, err
	}
	m.Envelope = []byte(env)
	m.SentAt = fromMicros(sent)
	return m, nil
}

// translate turns SQLite's constraint errors into the store's sentinels.
func translate(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY, sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			msg := se.Error()
			switch {
			case strings.Contains(msg, "handles.signing_key"), strings.Contains(msg, "signing_keys.signing_key"):
				return store.ErrKeyTaken
			case strings.Contains(msg, "handles.handle"), strings.Contains(msg, "inbox_counters.handle"):
				return store.ErrHandleTaken
			}
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return store.ErrNotFound
		}
	}
	return wrapUnavailable(err)
}

// wrapUnavailable marks errors that mean the database could not be reached
// or written (busy, full, I/O, closed) as store.ErrUnavailable.
func wrapUnavailable(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, sql.ErrTxDone) || strings.Contains(err.Error(), "sql: database is closed") {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
			sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL:
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	return err
}
