package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
	"github.com/kez-chat/kezd/store/storetest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func open(t testing.TB, url string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), postgres.Config{URL: url}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		return open(t, pgtest.NewDatabase(t))
	})
}

func register(t testing.TB, db *postgres.DB, handle string) {
	t.Helper()
	_, err := db.CreateHandle(context.Background(), store.Handle{
		Handle: handle, SigningKey: "sk-" + handle, EncryptionKey: "ek-" + handle,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Two *DB on one database behave as two kezd processes: each has its own
// pool and committer. Together they must hand out one gapless sequence, and
// store a (sender, id) sent through both exactly once.
func TestTwoProcessesOneRecipient(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	// Both migrate at once: the advisory lock makes them take turns.
	var a, b *postgres.DB
	var wg sync.WaitGroup
	wg.Go(func() { a = open(t, url) })
	wg.Go(func() { b = open(t, url) })
	wg.Wait()
	if t.Failed() {
		return
	}
	register(t, a, "bob")
	const writers, each = 8, 250
	for w := range writers {
		register(t, b, fmt.Sprintf("w%d", w))
	}

	type sent struct {
		key string
		seq int64
		dup bool
	}
	results := make(chan sent, 2*writers*each)
	errs := make(chan error, 2*writers)
	for _, db := range []*postgres.DB{a, b} {
		for w := range writers {
			wg.Go(func() {
				// Each message is sent through both processes, as a client
				// retrying against another instance would.
				for i := range each {
					m := store.NewMessage{From: fmt.Sprintf("w%d", w), To: "bob", ID: fmt.Sprintf("m%d", i), Envelope: []byte(`{}`)}
					res, err := db.AppendMessage(t.Context(), m)
					if err != nil {
						errs <- err
						return
					}
					results <- sent{m.From + "/" + m.ID, res.Message.Seq, res.Duplicate}
				}
			})
		}
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	seqOf := map[string]int64{}
	stored := map[string]int{}
	for r := range results {
		if s, ok := seqOf[r.key]; ok && s != r.seq {
			t.Fatalf("%s got seq %d and %d", r.key, s, r.seq)
		}
		seqOf[r.key] = r.seq
		if !r.dup {
			stored[r.key]++
		}
	}
	for k, n := range stored {
		if n != 1 {
			t.Errorf("%s stored %d times", k, n)
		}
	}
	if len(seqOf) != writers*each {
		t.Fatalf("%d distinct messages acknowledged, want %d", len(seqOf), writers*each)
	}

	var all []store.Message
	for since := int64(0); ; {
		page, err := a.ListMessages(t.Context(), "bob", since, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		all = append(all, page...)
		since = page[len(page)-1].Seq
	}
	if len(all) != writers*each {
		t.Fatalf("bob holds %d messages, want %d", len(all), writers*each)
	}
	for i, m := range all {
		if m.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d: gap or duplicate", i, m.Seq)
		}
		if seqOf[m.From+"/"+m.ID] != m.Seq {
			t.Fatalf("seq %d holds %s/%s, acknowledged with seq %d", m.Seq, m.From, m.ID, seqOf[m.From+"/"+m.ID])
		}
	}
	// Each process's committer carried every append it was given, in at
	// most as many batches.
	for _, db := range []*postgres.DB{a, b} {
		if st := db.BatchStats(); st.Appends != writers*each || st.Batches < 1 || st.Batches > st.Appends {
			t.Errorf("batch stats %+v, want %d appends in 1 to %d batches", st, writers*each, writers*each)
		}
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err = postgres.Open(t.Context(), postgres.Config{URL: "postgres://kez@" + addr + "/kez?sslmode=disable"}, nil)
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Open on an unreachable server error = %v, want ErrUnavailable", err)
	}
}

func TestDroppedDatabaseIsUnavailable(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	db := open(t, url)
	register(t, db, "alice")
	register(t, db, "bob")
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: "1", Envelope: []byte(`{}`)})
	if !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("append after Close error = %v, want ErrUnavailable", err)
	}
	if _, err := db.Handle(t.Context(), "alice"); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("lookup after Close error = %v, want ErrUnavailable", err)
	}
	if err := db.Ping(t.Context()); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("ping after Close error = %v, want ErrUnavailable", err)
	}
}

// A caller giving up must not disturb the others in its batch.
func TestCancelledCallerDoesNotDisturbBatch(t *testing.T) {
	t.Parallel()
	db := open(t, pgtest.NewDatabase(t))
	register(t, db, "alice")
	register(t, db, "bob")

	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ctx := t.Context()
			if i%2 == 1 {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			_, errs[i] = db.AppendMessage(ctx, store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint(i), Envelope: []byte(`{}`)})
		})
	}
	wg.Wait()
	for i := 0; i < n; i += 2 {
		if errs[i] != nil {
			t.Errorf("append %d: %v", i, errs[i])
		}
	}
	ms, err := db.ListMessages(t.Context(), "bob", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	// Cancelled appends may or may not have been stored; either way the
	// sequence has no gap.
	if len(ms) < n/2 {
		t.Errorf("bob holds %d messages, want at least %d", len(ms), n/2)
	}
	for i, m := range ms {
		if m.Seq != int64(i+1) {
			t.Fatalf("message %d has seq %d", i, m.Seq)
		}
	}
}

func TestInvalidEnvelopeFailsAlone(t *testing.T) {
	t.Parallel()
	db := open(t, pgtest.NewDatabase(t))
	register(t, db, "alice")
	register(t, db, "bob")
	_, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: "bad", Envelope: []byte("\"\xff\"")})
	if err == nil {
		t.Fatal("an envelope that is not UTF-8 was accepted")
	}
	if _, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: "good", Envelope: []byte(`"ok"`)}); err != nil {
		t.Fatal(err)
	}
}

// Handles are cached once found, but a miss is not: a handle registered
// through another process is found at once.
func TestHandleRegisteredElsewhere(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	if _, err := a.Handle(t.Context(), "carol"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("before registering: err = %v, want ErrNotFound", err)
	}
	register(t, b, "carol")
	for range 2 { // the second from the cache
		h, err := a.Handle(t.Context(), "carol")
		if err != nil || h.Handle != "carol" || h.SigningKey != "sk-carol" {
			t.Fatalf("after registering: %+v, %v", h, err)
		}
	}
}

// Two processes appending to one inbox under a quota, while a third
// deletes and runs retention, store exactly what one would: the quota is
// checked under the counter row's lock, and every delete keeps the usage.
func TestTwoProcessesOneQuota(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	register(t, a, "bob")
	const senders, each, quota = 6, 40, 50
	for w := range senders {
		register(t, a, fmt.Sprintf("w%d", w))
	}
	q := store.Quota{Messages: quota, Bytes: quota * 8}
	var mu sync.Mutex
	stored, refused := 0, 0
	var wg sync.WaitGroup
	for _, db := range []*postgres.DB{a, b} {
		for w := range senders {
			wg.Go(func() {
				for i := range each {
					_, err := db.AppendMessage(t.Context(), store.NewMessage{From: fmt.Sprintf("w%d", w), To: "bob",
						ID: fmt.Sprintf("%p-%d", db, i), Envelope: []byte(`"12345"`), Quota: q}) // 7 bytes
					mu.Lock()
					switch {
					case err == nil:
						stored++
					case errors.Is(err, store.ErrInboxFull):
						refused++
					default:
						t.Error(err)
					}
					mu.Unlock()
				}
			})
		}
	}
	// Deleting while they send: what is deleted makes room again.
	deleted := int64(0)
	wg.Go(func() {
		for through := int64(10); through <= 30; through += 10 {
			d, err := b.DeleteMessages(t.Context(), "bob", through)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			deleted += d.Count
			mu.Unlock()
		}
	})
	wg.Wait()
	holds, err := a.ListMessages(t.Context(), "bob", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if int64(stored)-deleted != int64(len(holds)) || len(holds) > quota {
		t.Fatalf("%d stored, %d deleted, bob holds %d (quota %d)", stored, deleted, len(holds), quota)
	}
	if stored+refused != 2*senders*each {
		t.Fatalf("%d stored + %d refused, want %d", stored, refused, 2*senders*each)
	}
	// The usage is exact: the inbox takes precisely what is left of it.
	room := quota - len(holds)
	for i := range room + 1 {
		_, err := b.AppendMessage(t.Context(), store.NewMessage{From: "w0", To: "bob", ID: fmt.Sprint("fill", i), Envelope: []byte(`"12345"`), Quota: q})
		if i < room && err != nil {
			t.Fatalf("fill %d of %d: %v", i, room, err)
		}
		if i == room && !errors.Is(err, store.ErrInboxFull) {
			t.Fatalf("append beyond the quota: %v", err)
		}
	}
}

// Retention run by two processes at once deletes every expired message
// once, and leaves the inboxes' usage exact.
func TestTwoProcessesRetention(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	a, b := open(t, url), open(t, url)
	const inboxes, each = 4, 300
	register(t, a, "alice")
	for i := range inboxes {
		register(t, a, fmt.Sprint("r", i))
		for j := range each {
			if _, err := a.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: fmt.Sprint("r", i), ID: fmt.Sprint(i, "-", j), Envelope: []byte(`"x"`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	later := time.Now().Add(time.Minute)
	var mu sync.Mutex
	deleted := int64(0)
	var wg sync.WaitGroup
	for _, db := range []*postgres.DB{a, b} {
		wg.Go(func() {
			for idle := 0; idle < 3; {
				n, err := db.DeleteSentBefore(t.Context(), later, 50)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				deleted += n
				mu.Unlock()
				if n == 0 {
					idle++ // the other process may hold the turn
				}
			}
		})
	}
	wg.Wait()
	if n, _ := a.DeleteSentBefore(t.Context(), later, 1000); n != 0 || deleted != inboxes*each {
		t.Fatalf("deleted %d (and %d more afterwards), want %d", deleted, n, inboxes*each)
	}
	for i := range inboxes {
		q := store.Quota{Messages: 1}
		if _, err := b.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: fmt.Sprint("r", i), ID: fmt.Sprint("after", i), Envelope: []byte(`1`), Quota: q}); err != nil {
			t.Fatalf("inbox r%d after retention: %v", i, err)
		}
	}
}

// Concurrent point reads are answered in batches (readbatch.go): each
// caller gets its own key's answer, whether the key is found, unknown or
// asked for by several callers at once, and a caller giving up disturbs
// no other.
func TestConcurrentReadsEachGetTheirOwn(t *testing.T) {
	t.Parallel()
	db := open(t, pgtest.NewDatabase(t))
	const handles = 60
	register(t, db, "sender")
	for i := range handles {
		h := fmt.Sprintf("h%d", i)
		register(t, db, h)
		for j := range i % 4 { // latest seq i%4
			if _, err := db.AppendMessage(t.Context(), store.NewMessage{From: "sender", To: h, ID: h + "-" + fmt.Sprint(j), Envelope: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	const readers = 480
	var wg sync.WaitGroup
	errs := make(chan error, 2*readers)
	start := make(chan struct{})
	for r := range readers {
		wg.Go(func() {
			<-start
			i := r % (handles + 10) // h60…h69 are not registered
			h := fmt.Sprintf("h%d", i)
			ctx := t.Context()
			if r%7 == 6 {
				// Gives up before asking, while queued, or while its
				// query runs; one that was to run the next query must
				// still run it, or those queued behind it would hang.
				c, cancel := context.WithTimeout(ctx, time.Duration(r%5)*200*time.Microsecond)
				defer cancel()
				ctx = c
			}
			got, err := db.Handle(ctx, h)
			seq, serr := db.LatestSeq(ctx, h)
			switch {
			case r%7 == 6:
				// An answer (its own key's) or the context's error.
				if err == nil && (got.Handle != h && i < handles) {
					errs <- fmt.Errorf("reader of %s that gave up got handle %q", h, got.Handle)
				}
				if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, store.ErrNotFound) {
					errs <- fmt.Errorf("reader of %s that gave up: %v", h, err)
				}
				if serr != nil && !errors.Is(serr, context.DeadlineExceeded) {
					errs <- fmt.Errorf("reader of %s's latest seq that gave up: %v", h, serr)
				}
				if serr == nil && seq != int64(i%4) && i < handles {
					errs <- fmt.Errorf("reader of %s that gave up: latest seq %d, want %d", h, seq, i%4)
				}
			case i >= handles:
				if !errors.Is(err, store.ErrNotFound) {
					errs <- fmt.Errorf("Handle(%s) of an unknown handle: %+v, %v", h, got, err)
				}
				if serr != nil || seq != 0 {
					errs <- fmt.Errorf("LatestSeq(%s) of an unknown handle = %d, %v, want 0", h, seq, serr)
				}
			default:
				if err != nil || got.Handle != h || got.SigningKey != "sk-"+h {
					errs <- fmt.Errorf("Handle(%s) = %+v, %v", h, got, err)
				}
				if serr != nil || seq != int64(i%4) {
					errs <- fmt.Errorf("LatestSeq(%s) = %d, %v, want %d", h, seq, serr, i%4)
				}
			}
		})
	}
	before := db.ReadStats()
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// They were batched: fewer queries than reads.
	st := db.ReadStats()
	reads, queries := st.Reads-before.Reads, st.Queries-before.Queries
	t.Logf("%d reads in %d queries", reads, queries)
	if reads == 0 || queries >= reads {
		t.Errorf("%d reads took %d queries: not batched", reads, queries)
	}
}
