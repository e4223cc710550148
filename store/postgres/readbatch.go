package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/store"
)

// Read batching.
//
// Every stream open looks its signer up and reads its inbox's latest seq,
// two point reads, and a pgx round trip costs the server more CPU than
// anything else an open does (a quarter of it in kezbench's reconnect
// storm). When an instance goes away its clients all open their streams
// again at once, so, as appends are group-committed, concurrent point reads
// of one kind are coalesced into one query over their keys.
//
// There are no reader goroutines: a read that finds fewer than readLeaders
// queries of its kind running runs one itself, for its own key and every
// key queued meanwhile (up to maxReadBatch), so that a lone read is one
// query on its caller's goroutine, as before. A read that finds them all
// busy queues its key and waits; a leader that finishes passes the lead
// to the first read still queued, which runs the next query for all of
// them.
//
// A read is queued only once its caller is ready for it, and its query
// starts after that, so it sees everything committed before the caller
// asked: LatestSeq read after a stream's subscription is still read after
// it.

// maxReadBatch bounds the keys of one batched read.
const maxReadBatch = 256

// readLeaders is how many queries of one kind may run at once: a slow one
// does not hold up every read of its kind.
const readLeaders = 2

// readTimeout bounds one batched read. The callers' contexts do not reach a
// query that answers several (one caller giving up must not fail the
// others); a caller whose context ends stops waiting for it, unless it is
// the one running the query.
const readTimeout = 10 * time.Second

// readBatch coalesces the point reads of one kind.
type readBatch[V any] struct {
	// query returns the rows found for keys (distinct); a key without one
	// is not found.
	query func(ctx context.Context, keys []string) (map[string]V, error)

	mu      sync.Mutex
	running int               // leaders running a query
	queued  []*readRequest[V] // waiting for the next query, in arrival order

	reads, queries atomic.Int64 // for ReadStats
}

type readRequest[V any] struct {
	key string
	// done takes the request's answer, or the lead (buffered: whoever
	// answers never blocks on it).
	done chan readResult[V]
}

type readResult[V any] struct {
	v     V
	found bool
	err   error
	lead  bool // no answer: run the next query, for the requests queued
}

func newReadBatch[V any](query func(context.Context, []string) (map[string]V, error)) *readBatch[V] {
	return &readBatch[V]{query: query}
}

// get reads key, in one query with every other read of its kind queued
// meanwhile.
func (b *readBatch[V]) get(ctx context.Context, db *DB, key string) (v V, found bool, err error) {
	db.mu.RLock()
	closed := db.closed
	db.mu.RUnlock()
	if closed {
		return v, false, fmt.Errorf("%w: store closed", store.ErrUnavailable)
	}
	if err := ctx.Err(); err != nil {
		return v, false, err
	}
	b.reads.Add(1)
	req := &readRequest[V]{key: key, done: make(chan readResult[V], 1)}
	b.mu.Lock()
	if b.running < readLeaders {
		b.running++
		b.mu.Unlock()
		return b.lead(ctx, req)
	}
	b.queued = append(b.queued, req)
	b.mu.Unlock()

	var r readResult[V]
	select {
	case r = <-req.done:
	case <-ctx.Done():
		b.mu.Lock()
		if i := slices.Index(b.queued, req); i >= 0 {
			b.queued = slices.Delete(b.queued, i, i+1)
			b.mu.Unlock()
			return v, false, ctx.Err()
		}
		b.mu.Unlock()
		// Taken into a query that is running (its answer will land in
		// done, unread), or given the lead. The lead is sent under b.mu,
		// so it is in done by now; it is passed on to the next read
		// queued, or the reads queued behind it would wait forever.
		select {
		case r = <-req.done:
			if r.lead {
				b.passLead()
			}
		default:
		}
		return v, false, ctx.Err()
	}
	if r.lead {
		return b.lead(ctx, req)
	}
	return r.v, r.found, r.err
}

// lead runs one query for me and the requests queued (up to maxReadBatch),
// answers them, and passes the lead on to the next one queued, if any.
// Alone, the query runs under my caller's ctx, as an unbatched read would;
// with others in it, under readTimeout only, since one caller giving up
// must not fail the others.
func (b *readBatch[V]) lead(ctx context.Context, me *readRequest[V]) (_ V, _ bool, err error) {
	b.mu.Lock()
	n := min(len(b.queued), maxReadBatch-1)
	batch := append([]*readRequest[V]{me}, b.queued[:n]...)
	b.queued = slices.Delete(b.queued, 0, n)
	b.mu.Unlock()
	b.queries.Add(1)

	var rows map[string]V
	ran := false
	// Whatever happens to the query (a panic, or its goroutine exiting,
	// included), every request in the batch is answered and the lead is
	// passed on or given back.
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("batched read: panic: %v", r)
			defer panic(r)
		} else if !ran {
			err = errors.New("batched read: the query did not return")
		}
		for _, r := range batch[1:] {
			v, ok := rows[r.key]
			r.done <- readResult[V]{v: v, found: ok, err: err}
		}
		b.passLead()
	}()

	keys := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, r := range batch {
		if !seen[r.key] {
			seen[r.key] = true
			keys = append(keys, r.key)
		}
	}
	if len(batch) > 1 {
		ctx = context.WithoutCancel(ctx)
	}
	qctx, cancel := context.WithTimeout(ctx, readTimeout)
	defer cancel()
	rows, err = b.query(qctx, keys)
	ran = true
	v, ok := rows[me.key]
	return v, ok, err
}

// passLead gives the lead held to the first request queued, or, with none
// queued, gives it back.
func (b *readBatch[V]) passLead() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queued) > 0 {
		next := b.queued[0]
		b.queued = slices.Delete(b.queued, 0, 1)
		next.done <- readResult[V]{lead: true} // the lead passes on: running stays
		return
	}
	b.running--
}

// ReadStats counts the batched point reads (Handle lookups that missed the
// cache, and LatestSeq) since Open, and the queries that answered them.
type ReadStats struct {
	Reads, Queries int64
}

// ReadStats says how many point reads were batched into how many queries.
func (db *DB) ReadStats() ReadStats {
	return ReadStats{
		Reads:   db.handleReads.reads.Load() + db.latestReads.reads.Load(),
		Queries: db.handleReads.queries.Load() + db.latestReads.queries.Load(),
	}
}

// queryHandles is Handle's batched read: the live handles among keys.
func (db *DB) queryHandles(ctx context.Context, keys []string) (map[string]store.Handle, error) {
	rows, err := db.pool.Query(ctx,
		`SELECT handle, signing_key, encryption_key, created_at FROM handles WHERE deleted_at IS NULL AND handle = ANY ($1::text[])`, keys)
	if err != nil {
		return nil, translate(err)
	}
	found := make(map[string]store.Handle, len(keys))
	var h store.Handle
	if _, err := pgx.ForEachRow(rows, []any{&h.Handle, &h.SigningKey, &h.EncryptionKey, &h.CreatedAt}, func() error {
		h.CreatedAt = h.CreatedAt.UTC()
		found[h.Handle] = h
		return nil
	}); err != nil {
		return nil, translate(err)
	}
	return found, nil
}

// queryLatestSeqs is LatestSeq's batched read: the counters of keys'
// inboxes. The counter, not max(seq) of the messages: after a deletion the
// next message still continues from it. It is committed with the messages.
func (db *DB) queryLatestSeqs(ctx context.Context, keys []string) (map[string]int64, error) {
	rows, err := db.pool.Query(ctx, `SELECT handle, last_seq FROM inbox_counters WHERE handle = ANY ($1::text[])`, keys)
	if err != nil {
		return nil, translate(err)
	}
	found := make(map[string]int64, len(keys))
	var handle string
	var seq int64
	if _, err := pgx.ForEachRow(rows, []any{&handle, &seq}, func() error {
		found[handle] = seq
		return nil
	}); err != nil {
		return nil, translate(err)
	}
	return found, nil
}
