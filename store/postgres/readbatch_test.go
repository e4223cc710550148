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
// must pass the lead on: the reads queued behind it would wait forever
// otherwise. The batch's coordination is what is tested here, so its query
// is a function of the test's (TestConcurrentReadsEachGetTheirOwn runs it
// on Postgres), and the test holds both leaders' places itself: it queues
// two reads, then, as a finishing leader does, passes the first the lead,
// just after that read gave up. Whether the read then sees its context end
// or the lead first is the scheduler's choice, so the scenario runs many
// times; every run must answer the read queued second.
func TestReadBatchLeadOutlivesAGivenUpReader(t *testing.T) {
	t.Parallel()
	for range 40 {
		b := newReadBatch(func(_ context.Context, keys []string) (map[string]int, error) {
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
		queued := func() int {
			b.mu.Lock()
			defer b.mu.Unlock()
			return len(b.queued)
		}
		b.mu.Lock()
		b.running = readLeaders // both places are the test's
		b.mu.Unlock()
		cctx, giveUp := context.WithCancel(t.Context())
		c := get(cctx, "ccc")
		testwait.Until(t, "ccc queued", func() bool { return queued() == 1 })
		d := get(t.Context(), "dddd")
		testwait.Until(t, "dddd queued", func() bool { return queued() == 2 })

		b.mu.Lock()
		giveUp()
		first := b.queued[0]
		b.queued = b.queued[1:]
		first.done <- readResult[int]{lead: true} // one of the test's places passes on
		b.mu.Unlock()

		select {
		case got := <-d:
			if got.err != nil || got.v != len("dddd") {
				t.Fatalf("read of dddd: %d, %v", got.v, got.err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the read of dddd was never answered (the lead was lost)")
		}
		if got := <-c; got.err != nil && !errors.Is(got.err, context.Canceled) {
			t.Fatalf("the read that gave up: %v", got.err)
		}
		b.mu.Lock()
		running, left := b.running, len(b.queued)
		b.mu.Unlock()
		if running != readLeaders-1 || left != 0 {
			t.Fatalf("after both reads: %d running (want the test's other place, 1), %d queued", running, left)
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
