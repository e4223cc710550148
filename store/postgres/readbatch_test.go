package postgres

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/testwait"
)

// A read that gives up at the moment a finishing leader passes it the lead
// must still run the next query: the reads queued behind it would wait
// forever otherwise. The batch's coordination is what is tested here, so
// its query is a function of the test's (TestConcurrentReadsEachGetTheirOwn
// runs it on Postgres). Whether the leader passes the lead before or after
// the reader sees its context end is up to the scheduler, so the scenario
// runs many times; every run must answer the read queued last.
func TestReadBatchLeadOutlivesAGivenUpReader(t *testing.T) {
	t.Parallel()
	for range 40 {
		release := make(chan struct{})
		b := newReadBatch(func(_ context.Context, keys []string) (map[string]int, error) {
			<-release
			found := make(map[string]int, len(keys))
			for _, k := range keys {
				found[k] = len(k)
			}
			return found, nil
		})
		db := &DB{}
		type answer struct {
			v   int
			err error
		}
		get := func(ctx context.Context, key string) chan answer {
			c := make(chan answer, 1)
			go func() {
				v, _, err := b.get(ctx, db, key)
				c <- answer{v, err}
			}()
			return c
		}
		state := func() (running, queued int) {
			b.mu.Lock()
			defer b.mu.Unlock()
			return b.running, len(b.queued)
		}
		// Two leaders, both in their queries; then two reads queue.
		a, bb := get(t.Context(), "a"), get(t.Context(), "bb")
		testwait.Until(t, "two leaders running", func() bool { r, _ := state(); return r == readLeaders })
		cctx, giveUp := context.WithCancel(t.Context())
		c := get(cctx, "ccc")
		testwait.Until(t, "one read queued", func() bool { _, q := state(); return q == 1 })
		d := get(t.Context(), "dddd")
		testwait.Until(t, "two reads queued", func() bool { _, q := state(); return q == 2 })

		// The leaders finish (and pass the lead to ccc, first in line)
		// while ccc gives up.
		b.mu.Lock()
		close(release)
		giveUp()
		b.mu.Unlock()

		for _, w := range []struct {
			key string
			c   chan answer
		}{{"a", a}, {"bb", bb}, {"dddd", d}} {
			select {
			case got := <-w.c:
				if got.err != nil || got.v != len(w.key) {
					t.Fatalf("read of %s: %d, %v", w.key, got.v, got.err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("the read of %s was never answered (the lead was lost)", w.key)
			}
		}
		if got := <-c; got.err != nil && !errors.Is(got.err, context.Canceled) {
			t.Fatalf("the read that gave up: %v", got.err)
		}
		if r, q := state(); r != 0 || q != 0 {
			t.Fatalf("after every read: %d running, %d queued", r, q)
		}
	}
}

// A read whose context ends while another's query runs for it returns at
// once, not when that query ends.
func TestReadBatchWaiterGivesUpAtOnce(t *testing.T) {
	t.Parallel()
	gate := make(chan struct{})
	var calls atomic.Int32
	b := newReadBatch(func(_ context.Context, keys []string) (map[string]int, error) {
		calls.Add(1)
		<-gate // one query per token
		return map[string]int{}, nil
	})
	db := &DB{}
	done := make(chan error, 4)
	get := func(ctx context.Context, key string) {
		go func() { _, _, err := b.get(ctx, db, key); done <- err }()
	}
	state := func() (running, queued int) {
		b.mu.Lock()
		defer b.mu.Unlock()
		return b.running, len(b.queued)
	}
	get(t.Context(), "a")
	get(t.Context(), "b")
	testwait.Until(t, "two leaders in their queries", func() bool { return calls.Load() == 2 })
	get(t.Context(), "c")
	testwait.Until(t, "c queued", func() bool { _, q := state(); return q == 1 })
	dctx, giveUp := context.WithCancel(t.Context())
	get(dctx, "d")
	testwait.Until(t, "d queued", func() bool { _, q := state(); return q == 2 })
	gate <- struct{}{} // a's query ends; c leads a query for c and d
	if err := <-done; err != nil {
		t.Fatalf("the first read to finish: %v", err)
	}
	testwait.Until(t, "c's query running, with d in it", func() bool { _, q := state(); return calls.Load() == 3 && q == 0 })
	giveUp()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("d gave up: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("d, which gave up, waited for the query running for it")
	}
	close(gate)
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if r, q := state(); r != 0 || q != 0 {
		t.Fatalf("after every read: %d running, %d queued", r, q)
	}
}
