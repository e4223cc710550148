package chat_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// pageMeter is a real store that records the most envelope bytes one
// listing returned: what a stream holds at once while it writes a page.
type pageMeter struct {
	*sqlite.DB
	mu       sync.Mutex
	maxBytes int
}

func (p *pageMeter) measure(ms []store.Message) {
	n := 0
	for _, m := range ms {
		n += len(m.Envelope)
	}
	p.mu.Lock()
	p.maxBytes = max(p.maxBytes, n)
	p.mu.Unlock()
}

func (p *pageMeter) ListMessages(ctx context.Context, to string, since int64, limit int) ([]store.Message, error) {
	ms, err := p.DB.ListMessages(ctx, to, since, limit)
	p.measure(ms)
	return ms, err
}

func (p *pageMeter) ListMessagesUpTo(ctx context.Context, to string, since int64, limit, maxBytes int) ([]store.Message, error) {
	ms, err := p.DB.ListMessagesUpTo(ctx, to, since, limit, maxBytes)
	p.measure(ms)
	return ms, err
}

func (p *pageMeter) most() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxBytes
}

// openSQLite opens a fresh SQLite store with alice and bob registered.
func openSQLite(t testing.TB) *sqlite.DB {
	t.Helper()
	db := teststore.SQLite(t)
	register(t, db, "alice", "bob")
	return db
}

// fill stores n messages of about 64 KiB for bob.
func fill(t testing.TB, db chat.Store, n int) {
	t.Helper()
	env := []byte(`"` + strings.Repeat("x", protocol.MaxEnvelope-2) + `"`)
	for i := range n {
		if _, err := db.AppendMessage(context.Background(), store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint("big", i), Envelope: env}); err != nil {
			t.Fatal(err)
		}
	}
}

// Defect 1 of issue 10: a stream's catch-up page was 100 messages whatever
// their size, 6.4 MB of 64 KiB envelopes held while a slow reader took
// them. It is bounded by bytes now, and still delivers everything.
func TestFollowCatchUpBoundedByBytes(t *testing.T) {
	t.Parallel()
	db := &pageMeter{DB: openSQLite(t)}
	fill(t, db, 100)
	f := follow(t, chat.New(chat.Config{}, db, nil, nil, slog.New(slog.DiscardHandler)), chat.Cursor{})
	f.expect(t, seqs(1, 100)...)
	if got := f.ready(t); got != 100 {
		t.Fatalf("ready latest %d, want 100", got)
	}
	if most := db.most(); most > chat.DefaultStreamPageBytes {
		t.Fatalf("a stream held %d bytes of envelopes at once; the bound is %d", most, chat.DefaultStreamPageBytes)
	}
}

// All streams' catch-up shares one budget: while one stream holds it, the
// next waits, and gets its page once the first gives it back.
func TestCatchUpBudgetWaits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openSQLite(t)
		fill(t, db, 8)
		svc := chat.New(chat.Config{CatchUpBudget: chat.DefaultStreamPageBytes, CatchUpWait: time.Minute}, db, nil, nil, slog.New(slog.DiscardHandler))
		gate := make(chan struct{})
		a := followWith(t, svc, chat.Cursor{}, gate)
		synctest.Wait() // a holds its page, blocked writing the first message
		b := follow(t, svc, chat.Cursor{})
		synctest.Wait()
		select {
		case e := <-b.events:
			t.Fatalf("the second stream got %s while the first held the whole budget", describe(e))
		default:
		}
		close(gate)
		a.expect(t, seqs(1, 8)...)
		b.expect(t, seqs(1, 8)...)
		a.ready(t)
		b.ready(t)
	})
}

// A stream that cannot get budget within CatchUpWait ends with ErrBusy
// (the client resumes), and is counted.
func TestCatchUpBudgetEndsWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openSQLite(t)
		fill(t, db, 8)
		svc := chat.New(chat.Config{CatchUpBudget: 1, CatchUpWait: 5 * time.Second}, db, nil, nil, slog.New(slog.DiscardHandler))
		gate := make(chan struct{})
		defer close(gate)
		followWith(t, svc, chat.Cursor{}, gate)
		synctest.Wait()
		start := time.Now()
		err := svc.Follow(t.Context(), owner(t, svc, "bob"), chat.Cursor{}, func(e chat.Event) error {
			return fmt.Errorf("got %s while the budget was taken", describe(e))
		})
		if !errors.Is(err, chat.ErrBusy) {
			t.Fatalf("Follow = %v, want ErrBusy", err)
		}
		if waited := time.Since(start); waited != 5*time.Second {
			t.Errorf("ended after %s, want the 5s CatchUpWait", waited)
		}
		if n := svc.StreamsBusy(); n != 1 {
			t.Errorf("StreamsBusy = %d, want 1", n)
		}
	})
}

// Catch-up events carry the page's drain deadline (the writer ends a
// stream that cannot meet it); ready does not.
func TestCatchUpDrainDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openSQLite(t)
		fill(t, db, 6) // two pages
		svc := chat.New(chat.Config{DrainTimeout: 3 * time.Second}, db, nil, nil, slog.New(slog.DiscardHandler))
		var deadlines, listed []time.Time
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		err := svc.Follow(ctx, owner(t, svc, "bob"), chat.Cursor{}, func(e chat.Event) error {
			switch e.Kind {
			case chat.EventMessage:
				if len(deadlines) == 0 || !e.Deadline.Equal(deadlines[len(deadlines)-1]) {
					listed = append(listed, time.Now())
				}
				deadlines = append(deadlines, e.Deadline)
				time.Sleep(time.Second) // a slow writer, in fake time
			case chat.EventReady:
				if !e.Deadline.IsZero() {
					t.Error("ready has a deadline")
				}
				cancel()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(deadlines) != 6 || len(listed) != 2 {
			t.Fatalf("%d catch-up messages in %d pages, want 6 in 2", len(deadlines), len(listed))
		}
		for i, d := range deadlines {
			page := listed[i/4]
			if !d.Equal(page.Add(3 * time.Second)) {
				t.Errorf("message %d: deadline %s after its page was read, want 3s", i+1, d.Sub(page))
			}
		}
	})
}

// Retention deletes what is older than its period, at every pass, and
// nothing younger; with a period of 0 it never runs.
func TestRunRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openSQLite(t)
		svc := chat.New(chat.Config{Retention: 24 * time.Hour, RetentionEvery: time.Hour}, db, nil, nil, slog.New(slog.DiscardHandler))
		held := func() []int64 {
			t.Helper()
			ms, err := svc.List(t.Context(), "bob", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var s []int64
			for _, m := range ms {
				s = append(s, m.Seq)
			}
			return s
		}
		send(t, svc, "old")
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { svc.RunRetention(ctx); close(done) }()
		time.Sleep(23*time.Hour + 30*time.Minute)
		synctest.Wait()
		if got := held(); len(got) != 1 {
			t.Fatalf("after 23.5 h bob holds %v, want [1]", got)
		}
		send(t, svc, "new")
		time.Sleep(time.Hour + 30*time.Minute) // the pass at 25 h
		synctest.Wait()
		if got := held(); len(got) != 1 || got[0] != 2 {
			t.Fatalf("after 25 h bob holds %v, want [2]", got)
		}
		cancel()
		<-done

		forever := chat.New(chat.Config{}, db, nil, nil, slog.New(slog.DiscardHandler))
		forever.RunRetention(t.Context()) // returns at once
		if n, err := forever.Expire(t.Context()); n != 0 || err != nil {
			t.Errorf("Expire with no retention = %d, %v", n, err)
		}
	})
}

// A retry of a deleted message is its duplicate for DedupWindow after the
// deletion, and a new message once a retention pass has forgotten its id;
// with DedupWindow 0 the id is never forgotten.
func TestRunRetentionForgetsDeletedIDs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := openSQLite(t)
		svc := chat.New(chat.Config{DedupWindow: 48 * time.Hour, RetentionEvery: time.Hour}, db, nil, nil, slog.New(slog.DiscardHandler))
		resend := func(svc *chat.Service, id string) protocol.SendResult {
			t.Helper()
			r, err := svc.Send(t.Context(), "alice", fmt.Appendf(nil, `{"to":"bob","id":%q,"envelope":1}`, id))
			if err != nil {
				t.Fatalf("resend %s: %v", id, err)
			}
			return r
		}
		seq := send(t, svc, "m1")
		if _, err := svc.DeleteThrough(t.Context(), "bob", seq); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan struct{})
		go func() { svc.RunRetention(ctx); close(done) }()
		time.Sleep(47*time.Hour + 30*time.Minute)
		synctest.Wait()
		if r := resend(svc, "m1"); !r.Duplicate || r.Seq != seq {
			t.Fatalf("retry 47.5 h after the deletion = %+v, want the duplicate of seq %d", r, seq)
		}
		time.Sleep(2 * time.Hour) // the pass at 49 h, the first more than 48 h after
		synctest.Wait()
		if r := resend(svc, "m1"); r.Duplicate || r.Seq != seq+1 {
			t.Fatalf("retry 49.5 h after the deletion = %+v, want a new message with seq %d", r, seq+1)
		}
		cancel()
		<-done

		forever := chat.New(chat.Config{RetentionEvery: time.Hour}, db, nil, nil, slog.New(slog.DiscardHandler))
		if _, err := forever.DeleteThrough(t.Context(), "bob", seq+1); err != nil {
			t.Fatal(err)
		}
		forever.RunRetention(t.Context()) // returns at once
		time.Sleep(1000 * time.Hour)
		if r := resend(forever, "m1"); !r.Duplicate || r.Seq != seq+1 {
			t.Fatalf("retry with no dedup window = %+v, want the duplicate of seq %d", r, seq+1)
		}
	})
}

// sentCounter counts the store's Sent lookups.
type sentCounter struct {
	chat.Store
	n atomic.Int64
}

func (c *sentCounter) Sent(ctx context.Context, from, id string) (store.Message, error) {
	c.n.Add(1)
	return c.Store.Sent(ctx, from, id)
}

// A send refused by a rate limit is looked up in the store (is it a retry
// of a stored message?) at most retryLookupsPerSecond times a second: a
// sender flooding past its limit costs no query per refusal.
func TestRateLimitedRetryLookupsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		db := &sentCounter{Store: openSQLite(t)}
		lim := ratelimit.New(ratelimit.Config{Limits: map[ratelimit.Name]ratelimit.Limit{ratelimit.Sends: {Burst: 1, Per: time.Hour}}})
		svc := chat.New(chat.Config{Limits: lim}, db, nil, nil, slog.New(slog.DiscardHandler))
		first := send(t, svc, "m0")
		for i := range 500 {
			_, err := svc.Send(t.Context(), "alice", fmt.Appendf(nil, `{"to":"bob","id":"flood%d","envelope":1}`, i))
			if chat.AsError(err).Code != protocol.CodeRateLimited {
				t.Fatalf("flood send %d: %v, want rate_limited", i, err)
			}
		}
		if n := db.n.Load(); n != 50 {
			t.Fatalf("500 refused sends in no time made %d store lookups, want 50", n)
		}
		// A second later there is room again, and a retry is its duplicate.
		time.Sleep(time.Second)
		r, err := svc.Send(t.Context(), "alice", []byte(`{"to":"bob","id":"m0","envelope":1}`))
		if err != nil || !r.Duplicate || r.Seq != first {
			t.Fatalf("retry of m0 over the limit = %+v, %v; want the duplicate of seq %d", r, err, first)
		}
	})
}
