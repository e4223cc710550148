package postgres

import (
	"context"
	"fmt"
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
// of one kind are coalesced: a reader worker takes every request queued at
// that moment (up to maxReadBatch, never waiting for more, so that a lone
// read is one query, as before) and answers them all with one query over
// their keys.
//
// A read is queued only once its caller is ready for it, and the query
// starts after that, so it sees everything committed before the caller
// asked: LatestSeq read after a stream's subscription is still read after
// it.

// maxReadBatch bounds the keys of one batched read.
const maxReadBatch = 256

// readWorkers is the number of workers per kind of read: a slow query does
// not hold up every read of its kind.
const readWorkers = 2

// readTimeout bounds one batched read. Callers' contexts do not reach the
// query (one caller giving up must not fail the others); a caller whose
// context ends stops waiting for it.
const readTimeout = 10 * time.Second

// readBatch coalesces the point reads of one kind.
type readBatch[V any] struct {
	queue chan *readRequest[V]
	// query returns the rows found for keys (distinct); a key without one
	// is not found.
	query func(ctx context.Context, keys []string) (map[string]V, error)
}

type readRequest[V any] struct {
	key  string
	done chan readResult[V] // buffered: the worker never blocks on it
}

type readResult[V any] struct {
	v     V
	found bool
	err   error
}

func newReadBatch[V any](query func(context.Context, []string) (map[string]V, error)) *readBatch[V] {
	return &readBatch[V]{queue: make(chan *readRequest[V], 4*maxReadBatch), query: query}
}

// start runs b's workers until db closes.
func (b *readBatch[V]) start(db *DB) {
	for range readWorkers {
		db.workers.Go(func() { b.loop(db.closing) })
	}
}

// get reads key, with every other read of its kind queued meanwhile.
func (b *readBatch[V]) get(ctx context.Context, db *DB, key string) (v V, found bool, err error) {
	req := &readRequest[V]{key: key, done: make(chan readResult[V], 1)}
	db.mu.RLock()
	if db.closed {
		db.mu.RUnlock()
		return v, false, fmt.Errorf("%w: store closed", store.ErrUnavailable)
	}
	// Holding the read lock while queueing keeps Close from finishing (and
	// the workers from exiting) until the request is in the queue.
	select {
	case b.queue <- req:
	case <-ctx.Done():
		db.mu.RUnlock()
		return v, false, ctx.Err()
	}
	db.mu.RUnlock()
	select {
	case r := <-req.done:
		return r.v, r.found, r.err
	case <-ctx.Done():
		return v, false, ctx.Err()
	}
}

// loop is one reader worker. After closing it answers what is still
// queued, then returns.
func (b *readBatch[V]) loop(closing <-chan struct{}) {
	batch := make([]*readRequest[V], 0, maxReadBatch)
	keys := make([]string, 0, maxReadBatch)
	seen := make(map[string]bool, maxReadBatch)
	for {
		var first *readRequest[V]
		select {
		case first = <-b.queue:
		case <-closing:
			select {
			case first = <-b.queue:
			default:
				return
			}
		}
		batch = append(batch[:0], first)
	fill:
		for len(batch) < maxReadBatch {
			select {
			case r := <-b.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		keys = keys[:0]
		clear(seen)
		for _, r := range batch {
			if !seen[r.key] {
				seen[r.key] = true
				keys = append(keys, r.key)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), readTimeout)
		rows, err := b.query(ctx, keys)
		cancel()
		for _, r := range batch {
			v, ok := rows[r.key]
			r.done <- readResult[V]{v: v, found: ok, err: err}
		}
		clear(batch)
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
