package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kez-chat/kezd/store"
)

// Group commit.
//
// A durable commit costs one fsync of the WAL, and with one transaction per
// message that fsync (and the recipient's counter row, locked until it
// ends) bounds throughput. So AppendMessage does not write: it queues a
// request, and a committer worker takes everything queued at that moment (up
// to maxBatch, never waiting for more, so a lone sender sees single-row
// latency) and commits it as one transaction in two round trips:
//
//  1. BEGIN; find the batch's (sender, id) pairs already stored; lock the
//     recipients' counter rows in handle order (so that processes sharing
//     the database cannot deadlock) and read their last seq; read now().
//  2. Bump the counters; insert the new messages, seqs given in arrival
//     order; COMMIT.
//
// Each request gets its own result: its seq, Duplicate with the original
// message, or ErrNotFound for an unknown recipient. A race with another
// process storing the same (sender, id) shows up as a unique violation that
// aborts the whole transaction; the batch is then run again, and the
// second run finds the other process's row. Counter updates roll back with
// the transaction, so no seq is ever lost.

// commitTimeout bounds one batch. Callers' contexts do not reach the batch:
// one caller giving up must not undo the others' messages.
const commitTimeout = 30 * time.Second

// maxAttempts bounds re-running a batch that lost a race.
const maxAttempts = 8

type appendRequest struct {
	ctx  context.Context
	msg  store.NewMessage
	done chan appendResult // buffered: the committer never blocks on it
}

type appendResult struct {
	appended store.Appended
	err      error
}

// errInvalidEnvelope reports an envelope that is not UTF-8 text, which a
// text column cannot hold.
var errInvalidEnvelope = errors.New("envelope is not valid UTF-8")

// AppendMessage stores m with the recipient's next seq, durably, before it
// returns. A message whose (From, ID) is already stored is not stored
// again: the original comes back with Duplicate set. An unknown recipient is
// store.ErrNotFound; a database that cannot take the write is
// store.ErrUnavailable.
//
// If ctx ends while the message is being committed, AppendMessage returns
// ctx's error, and the message may or may not have been stored; a retry with
// the same ID settles it.
func (db *DB) AppendMessage(ctx context.Context, m store.NewMessage) (store.Appended, error) {
	if !utf8.Valid(m.Envelope) {
		return store.Appended{}, fmt.Errorf("append message: %w", errInvalidEnvelope)
	}
	req := &appendRequest{ctx: ctx, msg: m, done: make(chan appendResult, 1)}

	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return store.Appended{}, fmt.Errorf("append message: %w: store closed", store.ErrUnavailable)
	}
	// Holding the read lock while queueing keeps Close from finishing (and
	// the workers from exiting) until the request is in the queue.
	select {
	case db.queue <- req:
	case <-ctx.Done():
		db.mu.RUnlock()
		return store.Appended{}, fmt.Errorf("append message: %w", ctx.Err())
	}
	db.mu.RUnlock()

	select {
	case res := <-req.done:
		if res.err != nil {
			return store.Appended{}, fmt.Errorf("append message: %w", res.err)
		}
		return res.appended, nil
	case <-ctx.Done():
		return store.Appended{}, fmt.Errorf("append message: %w", ctx.Err())
	}
}

// commitLoop is one committer worker. After Close it commits what is still
// queued, then returns.
func (db *DB) commitLoop() {
	batch := make([]*appendRequest, 0, db.maxBatch)
	for {
		var first *appendRequest
		select {
		case first = <-db.queue:
		case <-db.closing:
			select {
			case first = <-db.queue:
			default:
				return
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < db.maxBatch {
			select {
			case r := <-db.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		db.commit(batch)
		clear(batch)
	}
}

// commit runs one batch and answers every request in it.
func (db *DB) commit(reqs []*appendRequest) {
	// Callers that have already given up are answered by their own ctx.
	live := reqs[:0:0]
	for _, r := range reqs {
		if r.ctx.Err() == nil {
			live = append(live, r)
		}
	}
	if len(live) == 0 {
		return
	}

	// The same (sender, id) twice in one batch: the first is the leader,
	// the rest are its duplicates.
	leaders := make([]*appendRequest, 0, len(live))
	leaderOf := make(map[msgKey]int, len(live))
	follows := make([]int, len(live))
	for i, r := range live {
		k := msgKey{r.msg.From, r.msg.ID}
		if l, ok := leaderOf[k]; ok {
			follows[i] = l
			continue
		}
		leaderOf[k] = len(leaders)
		follows[i] = len(leaders)
		leaders = append(leaders, r)
	}

	ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
	defer cancel()
	results := db.commitWithRetry(ctx, leaders)

	seen := make([]bool, len(leaders))
	for i, r := range live {
		l := follows[i]
		res := results[l]
		if seen[l] && res.err == nil {
			res.appended.Duplicate = true
		}
		seen[l] = true
		r.done <- res
	}
}

type msgKey struct{ from, id string }

// commitWithRetry runs a batch of distinct (sender, id) requests, re-running
// it when it lost a race, and falling back to one transaction per message
// if the batch fails for a reason that might be one message's fault.
func (db *DB) commitWithRetry(ctx context.Context, reqs []*appendRequest) []appendResult {
	var err error
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		var results []appendResult
		results, err = db.tryBatch(ctx, reqs)
		if err == nil {
			return results
		}
		if !retryable(err) {
			break
		}
		db.log.Debug("append batch lost a race; retrying", "attempt", attempt, "size", len(reqs), "err", err)
	}
	if len(reqs) > 1 && !unavailable(err) {
		db.log.Warn("append batch failed; committing its messages one by one", "size", len(reqs), "err", err)
		results := make([]appendResult, len(reqs))
		for i := range reqs {
			results[i] = db.commitWithRetry(ctx, reqs[i:i+1:i+1])[0]
		}
		return results
	}
	results := make([]appendResult, len(reqs))
	for i := range results {
		results[i].err = translate(err)
	}
	return results
}

// retryable reports errors after which running the batch again can succeed:
// another transaction stored one of our (sender, id) first, or a deadlock.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "23505":
		return pgErr.ConstraintName == "messages_sender_client_id_key"
	case "40001", "40P01":
		return true
	}
	return false
}

// tryBatch commits reqs (distinct (sender, id) pairs) in one transaction. It
// returns per-request results, or an error that applies to the whole batch
// (and then nothing was committed).
func (db *DB) tryBatch(ctx context.Context, reqs []*appendRequest) (results []appendResult, err error) {
	conn, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	defer func() {
		if err != nil && conn.Conn().PgConn().TxStatus() != 'I' && !conn.Conn().IsClosed() {
			// Leave the connection clean for the pool; if this fails the pool
			// sees the open transaction and discards the connection.
			_, _ = conn.Exec(ctx, "ROLLBACK")
		}
	}()

	senders := make([]string, len(reqs))
	ids := make([]string, len(reqs))
	var recipients []string
	for i, r := range reqs {
		senders[i], ids[i] = r.msg.From, r.msg.ID
		recipients = append(recipients, r.msg.To)
	}
	slices.Sort(recipients)
	recipients = slices.Compact(recipients)

	// Round trip 1.
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(`SELECT m.sender, m.client_id, m.seq, m.recipient, m.envelope, m.sent_at
		FROM messages m JOIN unnest($1::text[], $2::text[]) AS k(sender, client_id)
		ON m.sender = k.sender AND m.client_id = k.client_id`, senders, ids)
	b.Queue(`SELECT handle, last_seq FROM inbox_counters WHERE handle = ANY($1) ORDER BY handle FOR UPDATE`, recipients)
	b.Queue(`SELECT now()`)
	stored := make(map[msgKey]store.Message)
	counters := make(map[string]int64, len(recipients))
	var now time.Time
	if err := runBatch(ctx, conn, b, func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var m store.Message
			var env []byte
			if err := rows.Scan(&m.From, &m.ID, &m.Seq, &m.To, &env, &m.SentAt); err != nil {
				rows.Close()
				return err
			}
			m.Envelope, m.SentAt = env, m.SentAt.UTC()
			stored[msgKey{m.From, m.ID}] = m
		}
		if err := rows.Err(); err != nil {
			return err
		}
		rows, err = br.Query()
		if err != nil {
			return err
		}
		for rows.Next() {
			var h string
			var last int64
			if err := rows.Scan(&h, &last); err != nil {
				rows.Close()
				return err
			}
			counters[h] = last
		}
		if err := rows.Err(); err != nil {
			return err
		}
		return br.QueryRow().Scan(&now)
	}); err != nil {
		return nil, err
	}
	now = now.UTC()

	// Seqs in arrival order.
	results = make([]appendResult, len(reqs))
	type row struct {
		i   int
		msg store.Message
	}
	var fresh []row
	for i, r := range reqs {
		if m, ok := stored[msgKey{r.msg.From, r.msg.ID}]; ok {
			results[i].appended = store.Appended{Message: m, Duplicate: true}
			continue
		}
		last, ok := counters[r.msg.To]
		if !ok {
			results[i].err = store.ErrNotFound
			continue
		}
		counters[r.msg.To] = last + 1
		m := store.Message{Seq: last + 1, From: r.msg.From, To: r.msg.To, ID: r.msg.ID, Envelope: r.msg.Envelope, SentAt: now}
		fresh = append(fresh, row{i, m})
		results[i].appended = store.Appended{Message: m}
	}

	// Round trip 2. Rows go in (sender, id) order, so that two processes
	// inserting the same pairs wait on each other in the same order and
	// cannot deadlock.
	b = &pgx.Batch{}
	if len(fresh) > 0 {
		slices.SortFunc(fresh, func(a, b row) int {
			if c := strings.Compare(a.msg.From, b.msg.From); c != 0 {
				return c
			}
			return strings.Compare(a.msg.ID, b.msg.ID)
		})
		var handles []string
		var lasts []int64
		for h, last := range counters {
			handles = append(handles, h)
			lasts = append(lasts, last)
		}
		cols := struct {
			recipient, sender, id, envelope []string
			seq                             []int64
		}{}
		for _, f := range fresh {
			cols.recipient = append(cols.recipient, f.msg.To)
			cols.seq = append(cols.seq, f.msg.Seq)
			cols.sender = append(cols.sender, f.msg.From)
			cols.id = append(cols.id, f.msg.ID)
			cols.envelope = append(cols.envelope, string(f.msg.Envelope))
		}
		b.Queue(`UPDATE inbox_counters c SET last_seq = v.last_seq
			FROM unnest($1::text[], $2::bigint[]) AS v(handle, last_seq)
			WHERE c.handle = v.handle AND c.last_seq < v.last_seq`, handles, lasts)
		b.Queue(`INSERT INTO messages (recipient, seq, sender, client_id, envelope, sent_at)
			SELECT r, s, f, c, e, now() FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) AS v(r, s, f, c, e)`,
			cols.recipient, cols.seq, cols.sender, cols.id, cols.envelope)
	}
	b.Queue("COMMIT")
	if err := runBatch(ctx, conn, b, func(br pgx.BatchResults) error {
		for range b.Len() {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return results, nil
}

// runBatch sends b as one pipeline and reads its results with read.
func runBatch(ctx context.Context, conn *pgxpool.Conn, b *pgx.Batch, read func(pgx.BatchResults) error) error {
	br := conn.SendBatch(ctx, b)
	err := read(br)
	return errors.Join(err, br.Close())
}
