package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
// latency) and commits it as one transaction in one round trip, a pipeline
// of BEGIN; lock the recipients' counter rows in handle order (so that
// processes sharing the database cannot deadlock); one statement that finds
// the (sender, id) pairs already stored, gives the others seqs in arrival
// order, bumps the counters and inserts the rows; COMMIT.
//
// Each request gets its own result: its seq, Duplicate with the original
// message, ErrInboxFull when it would take the recipient past its quota
// (checked under the counter row's lock, so concurrent batches in any
// process see each other's usage), or ErrNotFound for an unknown recipient. A race with another
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
// returns. A message whose (From, ID) is already stored, or was and has
// been deleted within the dedup window (see deleted_ids), is not stored
// again: the original comes back with Duplicate set. An unknown recipient is
// store.ErrNotFound; one that would take the inbox past m.Quota is
// store.ErrInboxFull, with nothing stored; a database that cannot take the write is
// store.ErrUnavailable.
//
// ctx bounds the wait for a batch to take the message: if it ends first,
// nothing is stored and ctx's error comes back. Once a batch has taken the
// message, the commit runs to its end whatever becomes of the caller, and
// the result says truly whether it was stored.
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

	// Queued: the answer always comes (a batch is bounded by commitTimeout),
	// and it is the truth: stored, or not stored.
	res := <-req.done
	if res.err != nil {
		return store.Appended{}, fmt.Errorf("append message: %w", res.err)
	}
	return res.appended, nil
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
	// Callers that gave up before their batch started are told so, with
	// nothing stored; the rest are committed whatever happens to them next.
	live := reqs[:0:0]
	for _, r := range reqs {
		if err := r.ctx.Err(); err != nil {
			r.done <- appendResult{err: err}
			continue
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	db.batches.Add(1)
	db.appends.Add(int64(len(live)))

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
			// The leader's caller publishes it; this one need not.
			res.appended.Duplicate, res.appended.Pending = true, false
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

// appendSQL does a batch's work in one statement, after the batch's
// counter rows are locked. Its inputs are arrays in arrival order ($1
// recipients, $2 senders, $3 client ids, $5 and $6 the recipients' quotas
// of messages and bytes, 0 for none, $7 envelopes) and $4, the distinct
// recipients. The envelopes come last, so that pgx appends the small
// parameters to its message buffer before the large one, and grows it once.
// It returns one row per input that is a duplicate (with the stored
// message, and whether its publish is still unconfirmed; or with a NULL
// envelope, its message since deleted: see deleted_ids),
// was stored (with its seq, and an outbox row) or was refused because it
// would take its inbox past its quota; an input with no row has an unknown
// recipient. Both lookups are LATERAL ... LIMIT 1, so that they are index
// probes whatever the planner thinks of the array sizes.
//
// The quota is checked against the counter row's usage plus the batch's
// earlier messages to the same inbox, refused ones included: what is
// stored is a prefix of each inbox's part of the batch, in arrival order.
const appendSQL = `
WITH input AS (
	SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $7::text[], $5::bigint[], $6::bigint[])
		WITH ORDINALITY AS t(recipient, sender, client_id, envelope, max_count, max_bytes, ord)
), dup AS (
	SELECT i.ord, m.seq, m.recipient, m.envelope, m.sent_at,
		m.envelope IS NOT NULL AND EXISTS (SELECT 1 FROM outbox o WHERE o.recipient = m.recipient AND o.seq = m.seq) AS pending
	FROM input i CROSS JOIN LATERAL (
		SELECT seq, recipient, envelope, sent_at FROM messages
		WHERE sender = i.sender AND client_id = i.client_id
		UNION ALL
		-- Deleted since, while its recipient exists.
		SELECT d.seq, d.recipient, NULL, d.sent_at FROM deleted_ids d
		WHERE d.sender = i.sender AND d.client_id = i.client_id
			AND EXISTS (SELECT 1 FROM inbox_counters c WHERE c.handle = d.recipient)
		LIMIT 1) m
), cand AS (
	SELECT i.ord, i.recipient, i.sender, i.client_id, i.envelope, octet_length(i.envelope) AS size,
		c.last_seq, i.max_count, i.max_bytes,
		c.msg_count + row_number() OVER w AS count_after,
		c.msg_bytes + sum(octet_length(i.envelope)) OVER w AS bytes_after
	FROM input i CROSS JOIN LATERAL (
		SELECT last_seq, msg_count, msg_bytes FROM inbox_counters WHERE handle = i.recipient LIMIT 1) c
	WHERE i.ord NOT IN (SELECT ord FROM dup)
	WINDOW w AS (PARTITION BY i.recipient ORDER BY i.ord)
), fresh AS (
	SELECT ord, recipient, sender, client_id, envelope, size,
		last_seq + row_number() OVER (PARTITION BY recipient ORDER BY ord) AS seq
	FROM cand
	WHERE (max_count = 0 OR count_after <= max_count) AND (max_bytes = 0 OR bytes_after <= max_bytes)
), refused AS (
	SELECT ord, recipient FROM cand WHERE ord NOT IN (SELECT ord FROM fresh)
), bump AS (
	UPDATE inbox_counters c
	SET last_seq = f.last_seq, msg_count = c.msg_count + f.n, msg_bytes = c.msg_bytes + f.b
	FROM (SELECT recipient, max(seq) AS last_seq, count(*) AS n, sum(size) AS b
		FROM fresh GROUP BY recipient) f
	WHERE c.handle = ANY ($4::text[]) AND c.handle = f.recipient
), ins AS (
	-- In (sender, id) order, so that two processes inserting the same pairs
	-- wait on each other in the same order and cannot deadlock.
	INSERT INTO messages (recipient, seq, sender, client_id, envelope, sent_at)
	SELECT recipient, seq, sender, client_id, envelope, now() FROM fresh
	ORDER BY sender, client_id
), ob AS (
	-- Stored, publish not yet confirmed (see store.Appended).
	INSERT INTO outbox (recipient, seq) SELECT recipient, seq FROM fresh
)
SELECT ord, 'duplicate', seq, recipient, envelope, sent_at, pending FROM dup
UNION ALL
SELECT ord, 'stored', seq, recipient, NULL, now(), true FROM fresh
UNION ALL
SELECT ord, 'full', 0, recipient, NULL, now(), false FROM refused`

// lockSQL locks the batch's counter rows in handle order, so that processes
// sharing the database cannot deadlock. appendSQL runs after it, in a new
// snapshot that sees every commit made before the locks were granted.
const lockSQL = `SELECT 1 FROM inbox_counters WHERE handle = ANY ($1::text[]) ORDER BY handle FOR UPDATE`

// tryBatch commits reqs (distinct (sender, id) pairs) in one transaction and
// one round trip: BEGIN, lockSQL, appendSQL and COMMIT go as one pipeline.
// It returns per-request results, or an error that applies to the whole
// batch (and then nothing was committed).
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

	recipients := make([]string, len(reqs))
	senders := make([]string, len(reqs))
	ids := make([]string, len(reqs))
	// The envelopes' bytes as they are, no string copy each (see envelopes).
	envs := make(envelopes, len(reqs))
	maxCounts := make([]int64, len(reqs))
	maxBytes := make([]int64, len(reqs))
	for i, r := range reqs {
		recipients[i], senders[i], ids[i], envs[i] = r.msg.To, r.msg.From, r.msg.ID, r.msg.Envelope
		maxCounts[i], maxBytes[i] = max(r.msg.Quota.Messages, 0), max(r.msg.Quota.Bytes, 0)
	}
	distinct := slices.Clone(recipients)
	slices.Sort(distinct)
	distinct = slices.Compact(distinct)

	results = make([]appendResult, len(reqs))
	for i := range results {
		results[i].err = store.ErrNotFound
	}
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	b.Queue(lockSQL, distinct)
	b.Queue(appendSQL, recipients, senders, ids, distinct, maxCounts, maxBytes, envs)
	b.Queue("COMMIT")
	if err := runBatch(ctx, conn, b, func(br pgx.BatchResults) error {
		for range 2 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		// Declared once for every row: Scan takes their addresses, so each
		// would be a heap allocation per row.
		var (
			ord       int64
			outcome   string
			m         store.Message
			recipient string
			env       *string
			pending   bool
		)
		for rows.Next() {
			m, env = store.Message{}, nil
			if err := rows.Scan(&ord, &outcome, &m.Seq, &recipient, &env, &m.SentAt, &pending); err != nil {
				rows.Close()
				return err
			}
			if ord < 1 || ord > int64(len(reqs)) {
				rows.Close()
				return fmt.Errorf("append returned row %d of %d", ord, len(reqs))
			}
			if outcome == "full" {
				results[ord-1] = appendResult{err: store.ErrInboxFull}
				continue
			}
			duplicate := outcome == "duplicate"
			r := reqs[ord-1]
			m.From, m.To, m.ID, m.SentAt = r.msg.From, recipient, r.msg.ID, m.SentAt.UTC()
			switch {
			case !duplicate:
				m.Envelope = r.msg.Envelope
			case env != nil:
				m.Envelope = []byte(*env)
			} // else the original was deleted: only its seq and sent_at are left
			results[ord-1] = appendResult{appended: store.Appended{Message: m, Duplicate: duplicate, Pending: pending}}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = br.Exec()
		return err
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
