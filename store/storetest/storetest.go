// Package storetest is the conformance suite every store backend must pass,
// so that the core behaves the same on Postgres and on SQLite. A backend's
// tests call Run with a function that opens a fresh, empty store.
package storetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store"
)

// Store is what a backend provides; both store/postgres.DB and
// store/sqlite.DB implement it.
type Store interface {
	CreateHandle(ctx context.Context, h store.Handle) (store.Handle, error)
	Handle(ctx context.Context, handle string) (store.Handle, error)
	HandleByKey(ctx context.Context, signingKey string) (store.Handle, error)
	AppendMessage(ctx context.Context, m store.NewMessage) (store.Appended, error)
	ListMessages(ctx context.Context, to string, since int64, limit int) ([]store.Message, error)
	ListMessagesUpTo(ctx context.Context, to string, since int64, limit, maxBytes int) ([]store.Message, error)
	LatestSeq(ctx context.Context, to string) (int64, error)
	ConfirmPublished(ctx context.Context, keys []store.MessageKey) error
	SweepUnpublished(ctx context.Context, olderThan time.Duration, limit int, publish func([]store.Message) error) (int, error)
	DeleteSentBefore(ctx context.Context, before time.Time, limit int) (int64, error)
	ForgetDeletedIDs(ctx context.Context, before time.Time, limit int) (int64, error)
	Sent(ctx context.Context, from, id string) (store.Message, error)
	SharedSecret(ctx context.Context, name, candidate string) (string, error)
	Ping(ctx context.Context) error

	RotateKeys(ctx context.Context, handle, current string, h store.Handle) (store.Handle, error)
	DeleteHandle(ctx context.Context, handle, current string) (time.Time, error)
	DeleteMessages(ctx context.Context, to string, through int64) (store.Deleted, error)
	HandleAt(ctx context.Context, handle string, at time.Time) (store.Handle, error)
}

// Run runs the suite. open must return a fresh, empty store for the test it
// is given and arrange (with t.Cleanup) for it to be closed.
func Run(t *testing.T, open func(t *testing.T) Store) {
	cases := []struct {
		name string
		test func(t *testing.T, s Store)
	}{
		{"RegisterAndLookUp", testRegisterAndLookUp},
		{"DuplicateHandle", testDuplicateHandle},
		{"DuplicateKey", testDuplicateKey},
		{"HandleByKey", testHandleByKey},
		{"AppendThenList", testAppendThenList},
		{"ConcurrentWritersOneRecipient", testConcurrentWriters},
		{"IdempotentRetry", testIdempotentRetry},
		{"RetryOfDeletedMessage", testRetryOfDeletedMessage},
		{"RetryToDeletedHandle", testRetryToDeletedHandle},
		{"ConcurrentRetries", testConcurrentRetries},
		{"UnknownRecipient", testUnknownRecipient},
		{"CallerGoneBeforeAppend", testCallerGoneBeforeAppend},
		{"LargeEnvelopeVerbatim", testLargeEnvelope},
		{"LatestSeq", testLatestSeq},
		{"Ping", testPing},
		{"RotateKeys", testRotateKeys},
		{"RotateEncryptionKeyOnly", testRotateEncryptionKeyOnly},
		{"RotateRefusesUsedKeys", testRotateRefusesUsedKeys},
		{"KeyHistory", testKeyHistory},
		{"DeleteHandle", testDeleteHandle},
		{"SendRacingDeletion", testSendRacingDeletion},
		{"DeleteMessagesThrough", testDeleteMessagesThrough},
		{"OutboxPendingUntilConfirmed", testOutboxPending},
		{"OutboxSweep", testOutboxSweep},
		{"OutboxSweepFailureKeeps", testOutboxSweepFailure},
		{"OutboxSweepLease", testOutboxSweepLease},
		{"ListUpToBytes", testListUpTo},
		{"QuotaMessages", testQuotaMessages},
		{"QuotaBytes", testQuotaBytes},
		{"QuotaConcurrent", testQuotaConcurrent},
		{"QuotaDuplicateWhenFull", testQuotaDuplicateWhenFull},
		{"DeleteSentBefore", testDeleteSentBefore},
		{"SharedSecretFirstWins", testSharedSecret},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.test(t, open(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

func randomKey() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// register creates a handle with fresh keys.
func register(t *testing.T, s Store, handle string) store.Handle {
	t.Helper()
	h, err := s.CreateHandle(ctx(t), store.Handle{Handle: handle, SigningKey: randomKey(), EncryptionKey: randomKey()})
	if err != nil {
		t.Fatalf("register %s: %v", handle, err)
	}
	return h
}

func mustAppend(t *testing.T, s Store, m store.NewMessage) store.Appended {
	t.Helper()
	a, err := s.AppendMessage(ctx(t), m)
	if err != nil {
		t.Fatalf("append %s/%s: %v", m.From, m.ID, err)
	}
	return a
}

func mustList(t *testing.T, s Store, to string, since int64, limit int) []store.Message {
	t.Helper()
	ms, err := s.ListMessages(ctx(t), to, since, limit)
	if err != nil {
		t.Fatalf("list %s since %d: %v", to, since, err)
	}
	return ms
}

func seqs(ms []store.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

func sameHandle(a, b store.Handle) bool {
	return a.Handle == b.Handle && a.SigningKey == b.SigningKey &&
		a.EncryptionKey == b.EncryptionKey && a.CreatedAt.Equal(b.CreatedAt)
}

func sameMessage(a, b store.Message) bool {
	return a.Seq == b.Seq && a.From == b.From && a.To == b.To && a.ID == b.ID &&
		bytes.Equal(a.Envelope, b.Envelope) && a.SentAt.Equal(b.SentAt)
}

func testRegisterAndLookUp(t *testing.T, s Store) {
	in := store.Handle{Handle: "alice", SigningKey: randomKey(), EncryptionKey: randomKey()}
	before := time.Now().Add(-time.Second)
	got, err := s.CreateHandle(ctx(t), in)
	if err != nil {
		t.Fatal(err)
	}
	if got.Handle != in.Handle || got.SigningKey != in.SigningKey || got.EncryptionKey != in.EncryptionKey {
		t.Errorf("CreateHandle = %+v, want the keys of %+v", got, in)
	}
	if got.CreatedAt.Location() != time.UTC || got.CreatedAt.Before(before) || got.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("CreatedAt = %v, want now in UTC", got.CreatedAt)
	}

	looked, err := s.Handle(ctx(t), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if !sameHandle(looked, got) || looked.CreatedAt.Location() != time.UTC {
		t.Errorf("Handle = %+v, want %+v", looked, got)
	}

	if _, err := s.Handle(ctx(t), "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Handle(unknown) error = %v, want ErrNotFound", err)
	}
}

func testDuplicateHandle(t *testing.T, s Store) {
	first := register(t, s, "alice")
	_, err := s.CreateHandle(ctx(t), store.Handle{Handle: "alice", SigningKey: randomKey(), EncryptionKey: randomKey()})
	if !errors.Is(err, store.ErrHandleTaken) {
		t.Fatalf("second registration error = %v, want ErrHandleTaken", err)
	}
	got, err := s.Handle(ctx(t), "alice")
	if err != nil || !sameHandle(got, first) {
		t.Errorf("after a refused registration Handle = %+v, %v; want the first %+v", got, err, first)
	}
}

func testDuplicateKey(t *testing.T, s Store) {
	first := register(t, s, "alice")
	_, err := s.CreateHandle(ctx(t), store.Handle{Handle: "mallory", SigningKey: first.SigningKey, EncryptionKey: randomKey()})
	if !errors.Is(err, store.ErrKeyTaken) {
		t.Fatalf("registration with a used key error = %v, want ErrKeyTaken", err)
	}
	if _, err := s.Handle(ctx(t), "mallory"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused handle was stored: Handle error = %v, want ErrNotFound", err)
	}
}

func testHandleByKey(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	register(t, s, "bob")
	got, err := s.HandleByKey(ctx(t), alice.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	if !sameHandle(got, alice) {
		t.Errorf("HandleByKey = %+v, want %+v", got, alice)
	}
	if _, err := s.HandleByKey(ctx(t), randomKey()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HandleByKey(unknown) error = %v, want ErrNotFound", err)
	}
}

func testAppendThenList(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	register(t, s, "carol")

	var sent []store.Message
	for i := range 5 {
		before := time.Now().Add(-time.Second)
		a := mustAppend(t, s, store.NewMessage{
			From: "alice", To: "bob", ID: fmt.Sprintf("m%d", i),
			Envelope: []byte(fmt.Sprintf(`{"n":%d}`, i)),
		})
		m := a.Message
		if a.Duplicate {
			t.Errorf("first append of m%d reported Duplicate", i)
		}
		if m.Seq != int64(i+1) || m.From != "alice" || m.To != "bob" || m.ID != fmt.Sprintf("m%d", i) {
			t.Errorf("append %d = %+v, want seq %d from alice to bob", i, m, i+1)
		}
		if m.SentAt.Location() != time.UTC || m.SentAt.Before(before) || m.SentAt.After(time.Now().Add(time.Second)) {
			t.Errorf("SentAt = %v, want now in UTC", m.SentAt)
		}
		sent = append(sent, m)
	}
	// Another recipient has its own sequence.
	if a := mustAppend(t, s, store.NewMessage{From: "alice", To: "carol", ID: "c0", Envelope: []byte(`{}`)}); a.Message.Seq != 1 {
		t.Errorf("first message to carol has seq %d, want 1", a.Message.Seq)
	}

	all := mustList(t, s, "bob", 0, 100)
	if len(all) != len(sent) {
		t.Fatalf("list since 0 = seqs %v, want 1..5", seqs(all))
	}
	for i := range all {
		if !sameMessage(all[i], sent[i]) || all[i].SentAt.Location() != time.UTC {
			t.Errorf("listed %+v, want %+v as appended", all[i], sent[i])
		}
	}

	for _, tc := range []struct {
		since int64
		limit int
		want  []int64
	}{
		{0, 2, []int64{1, 2}},
		{2, 2, []int64{3, 4}},
		{3, 100, []int64{4, 5}},
		{5, 100, []int64{}},
		{99, 100, []int64{}},
	} {
		got := seqs(mustList(t, s, "bob", tc.since, tc.limit))
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("list since %d limit %d = %v, want %v", tc.since, tc.limit, got, tc.want)
		}
	}
	if got := mustList(t, s, "alice", 0, 100); len(got) != 0 {
		t.Errorf("alice's inbox holds %d messages she sent to others", len(got))
	}
}

func testConcurrentWriters(t *testing.T, s Store) {
	const writers, each = 8, 500
	register(t, s, "bob")
	for w := range writers {
		register(t, s, fmt.Sprintf("w%d", w))
	}

	var wg sync.WaitGroup
	got := make([][]int64, writers)
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				a, err := s.AppendMessage(ctx(t), store.NewMessage{
					From: fmt.Sprintf("w%d", w), To: "bob", ID: fmt.Sprintf("m%d", i),
					Envelope: []byte(fmt.Sprintf(`{"w":%d,"i":%d}`, w, i)),
				})
				if err != nil {
					errs <- fmt.Errorf("writer %d message %d: %w", w, i, err)
					return
				}
				got[w] = append(got[w], a.Message.Seq)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	seen := make(map[int64]string, writers*each)
	for w, ss := range got {
		for i, seq := range ss {
			if other, dup := seen[seq]; dup {
				t.Fatalf("seq %d given to w%d/m%d and to %s", seq, w, i, other)
			}
			seen[seq] = fmt.Sprintf("w%d/m%d", w, i)
			// One writer's messages are sent one after another, so their
			// seqs must increase.
			if i > 0 && seq <= ss[i-1] {
				t.Errorf("writer %d: seq %d after %d", w, seq, ss[i-1])
			}
		}
	}
	for seq := int64(1); seq <= writers*each; seq++ {
		if _, ok := seen[seq]; !ok {
			t.Fatalf("seq %d was never given out (gap)", seq)
		}
	}

	var listed []store.Message
	for since := int64(0); ; {
		page := mustList(t, s, "bob", since, 1000)
		if len(page) == 0 {
			break
		}
		listed = append(listed, page...)
		since = page[len(page)-1].Seq
	}
	if len(listed) != writers*each {
		t.Fatalf("listed %d messages, want %d", len(listed), writers*each)
	}
	for i, m := range listed {
		if m.Seq != int64(i+1) {
			t.Fatalf("listed message %d has seq %d, want %d", i, m.Seq, i+1)
		}
		if seen[m.Seq] != m.From+"/"+m.ID {
			t.Fatalf("seq %d holds %s/%s, but was given to %s", m.Seq, m.From, m.ID, seen[m.Seq])
		}
	}
	if latest, err := s.LatestSeq(ctx(t), "bob"); err != nil || latest != writers*each {
		t.Errorf("LatestSeq = %d, %v; want %d", latest, err, writers*each)
	}
}

func testIdempotentRetry(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	register(t, s, "carol")
	first := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{"v":1}`)})

	// A retry returns the original, whatever it carries this time.
	retry := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{"v":2}`)})
	if !retry.Duplicate {
		t.Error("retry not reported as Duplicate")
	}
	if !sameMessage(retry.Message, first.Message) {
		t.Errorf("retry returned %+v, want the original %+v", retry.Message, first.Message)
	}
	if ms := mustList(t, s, "bob", 0, 100); len(ms) != 1 {
		t.Errorf("after a retry bob holds seqs %v, want [1]", seqs(ms))
	}

	// The id is unique per sender, not globally.
	other := mustAppend(t, s, store.NewMessage{From: "carol", To: "bob", ID: "m1", Envelope: []byte(`{}`)})
	if other.Duplicate || other.Message.Seq != 2 {
		t.Errorf("same id from another sender = %+v, want a new message with seq 2", other)
	}
}

func testConcurrentRetries(t *testing.T, s Store) {
	const tries = 16
	register(t, s, "alice")
	register(t, s, "bob")

	results := make([]store.Appended, tries)
	errs := make([]error, tries)
	var wg sync.WaitGroup
	for i := range tries {
		wg.Go(func() {
			results[i], errs[i] = s.AppendMessage(ctx(t), store.NewMessage{
				From: "alice", To: "bob", ID: "same", Envelope: []byte(`{"x":1}`),
			})
		})
	}
	wg.Wait()

	originals := 0
	for i := range tries {
		if errs[i] != nil {
			t.Fatalf("try %d: %v", i, errs[i])
		}
		if !results[i].Duplicate {
			originals++
		}
		if !sameMessage(results[i].Message, results[0].Message) {
			t.Errorf("try %d returned %+v, try 0 %+v", i, results[i].Message, results[0].Message)
		}
	}
	if originals != 1 {
		t.Errorf("%d tries stored a message, want exactly 1", originals)
	}
	if ms := mustList(t, s, "bob", 0, 100); len(ms) != 1 || ms[0].Seq != 1 {
		t.Errorf("bob holds seqs %v, want [1]", seqs(ms))
	}
}

func testUnknownRecipient(t *testing.T, s Store) {
	register(t, s, "alice")
	_, err := s.AppendMessage(ctx(t), store.NewMessage{From: "alice", To: "nobody", ID: "m1", Envelope: []byte(`{}`)})
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("append to unknown recipient error = %v, want ErrNotFound", err)
	}
	// Nothing was stored under (alice, m1): using the id again is a first send.
	register(t, s, "bob")
	a := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)})
	if a.Duplicate || a.Message.Seq != 1 {
		t.Errorf("after a refused append, append = %+v; want a new message with seq 1", a)
	}
}

// testCallerGoneBeforeAppend: a caller whose context has ended before the
// append starts gets its error and nothing is stored, so that an error
// always means "not stored" (a 503 the client may retry).
func testCallerGoneBeforeAppend(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	gone, cancel := context.WithCancel(ctx(t))
	cancel()
	if _, err := s.AppendMessage(gone, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)}); !errors.Is(err, context.Canceled) {
		t.Fatalf("append with an ended context: %v, want context.Canceled", err)
	}
	a := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)})
	if a.Duplicate || a.Message.Seq != 1 {
		t.Errorf("after the refused append, append = %+v; want a new message with seq 1", a)
	}
}

// bigEnvelope is 64 KiB of JSON text that any re-encoding would change: odd
// key order, escapes, number spellings, literal < > &.
func bigEnvelope() []byte {
	head := `{"z":1.0e2,"a":"\u003c\u003e\u0026 <b>&amp;</b> \"q\" \\ \/ é \ud83d\ude00","n":[1.50,-0.0,0E0,1e-7,12345678901234567890],"t":true,"nil":null,"obj":{"y":{},"x":[]},"pad":"`
	tail := `"}`
	pad := strings.Repeat("<&>abc", (64*1024-len(head)-len(tail))/6+1)
	pad = pad[:64*1024-len(head)-len(tail)]
	return []byte(head + pad + tail)
}

func testLargeEnvelope(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	env := bigEnvelope()
	if len(env) != 64*1024 {
		t.Fatalf("test envelope is %d bytes", len(env))
	}
	a := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "big", Envelope: bytes.Clone(env)})
	if !bytes.Equal(a.Message.Envelope, env) {
		t.Error("append returned a different envelope")
	}
	ms := mustList(t, s, "bob", 0, 10)
	if len(ms) != 1 {
		t.Fatalf("bob holds %d messages, want 1", len(ms))
	}
	if !bytes.Equal(ms[0].Envelope, env) {
		i := 0
		for i < len(env) && i < len(ms[0].Envelope) && env[i] == ms[0].Envelope[i] {
			i++
		}
		t.Errorf("listed envelope differs from the one sent at byte %d (len %d, want %d)", i, len(ms[0].Envelope), len(env))
	}
}

func testLatestSeq(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	if n, err := s.LatestSeq(ctx(t), "bob"); err != nil || n != 0 {
		t.Errorf("LatestSeq of an empty inbox = %d, %v; want 0", n, err)
	}
	for i := range 3 {
		mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint(i), Envelope: []byte(`1`)})
	}
	if n, err := s.LatestSeq(ctx(t), "bob"); err != nil || n != 3 {
		t.Errorf("LatestSeq = %d, %v; want 3", n, err)
	}
	if n, err := s.LatestSeq(ctx(t), "alice"); err != nil || n != 0 {
		t.Errorf("LatestSeq of the sender = %d, %v; want 0", n, err)
	}
}

func testPing(t *testing.T, s Store) {
	if err := s.Ping(ctx(t)); err != nil {
		t.Errorf("Ping: %v", err)
	}
}

// testOutboxPending: a fresh message is pending; so is a retry of it until
// its publish is confirmed, and not after.
func testOutboxPending(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	first := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)})
	if !first.Pending {
		t.Error("a fresh message is not Pending")
	}
	if retry := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)}); !retry.Duplicate || !retry.Pending {
		t.Errorf("retry before confirmation = Duplicate %v, Pending %v; want both", retry.Duplicate, retry.Pending)
	}
	if err := s.ConfirmPublished(ctx(t), []store.MessageKey{{To: "bob", Seq: first.Message.Seq}}); err != nil {
		t.Fatalf("confirm: %v", err)
	}
	if retry := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`{}`)}); !retry.Duplicate || retry.Pending {
		t.Errorf("retry after confirmation = Duplicate %v, Pending %v; want a duplicate, not pending", retry.Duplicate, retry.Pending)
	}
	if ms := mustList(t, s, "bob", 0, 10); len(ms) != 1 {
		t.Errorf("bob holds seqs %v after confirmation, want [1]", seqs(ms))
	}
	// Confirming nothing, or what is already confirmed, is not an error.
	if err := s.ConfirmPublished(ctx(t), nil); err != nil {
		t.Errorf("confirm nothing: %v", err)
	}
	if err := s.ConfirmPublished(ctx(t), []store.MessageKey{{To: "bob", Seq: 1}, {To: "nobody", Seq: 7}}); err != nil {
		t.Errorf("confirm again: %v", err)
	}
}

// sweep runs one sweep and returns what it passed to publish.
func sweep(t *testing.T, s Store, olderThan time.Duration, limit int) []store.Message {
	t.Helper()
	var got []store.Message
	n, err := s.SweepUnpublished(ctx(t), olderThan, limit, func(ms []store.Message) error {
		got = append(got, ms...)
		return nil
	})
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if n != len(got) {
		t.Errorf("sweep returned %d, published %d", n, len(got))
	}
	return got
}

func keysOf(ms []store.Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%s/%d", m.To, m.Seq)
	}
	return out
}

// testOutboxSweep: a sweep hands over the unconfirmed messages older than
// its bound, whole and in (recipient, seq) order, at most limit of them,
// and confirms them; confirmed ones are never swept.
func testOutboxSweep(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	register(t, s, "carol")
	var stored []store.Message
	for _, m := range []store.NewMessage{
		{From: "alice", To: "carol", ID: "c1", Envelope: []byte(`{"n":1}`)},
		{From: "alice", To: "bob", ID: "b1", Envelope: []byte(`{"n":2}`)},
		{From: "alice", To: "bob", ID: "b2", Envelope: []byte(`{"n":3}`)},
		{From: "alice", To: "bob", ID: "b3", Envelope: []byte(`{"n":4}`)},
	} {
		stored = append(stored, mustAppend(t, s, m).Message)
	}
	// bob/3 was published and confirmed by its instance.
	if err := s.ConfirmPublished(ctx(t), []store.MessageKey{{To: "bob", Seq: 3}}); err != nil {
		t.Fatal(err)
	}
	if got := sweep(t, s, time.Hour, 10); len(got) != 0 {
		t.Fatalf("a sweep of entries older than an hour got %v, want none", keysOf(got))
	}
	got := sweep(t, s, 0, 2)
	if want := []string{"bob/1", "bob/2"}; fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
		t.Fatalf("first sweep (limit 2) got %v, want %v", keysOf(got), want)
	}
	if !sameMessage(got[0], stored[1]) || !sameMessage(got[1], stored[2]) {
		t.Errorf("swept messages %+v differ from the stored %+v", got, stored[1:3])
	}
	got = sweep(t, s, 0, 2)
	if want := []string{"carol/1"}; fmt.Sprint(keysOf(got)) != fmt.Sprint(want) {
		t.Fatalf("second sweep got %v, want %v", keysOf(got), want)
	}
	if got := sweep(t, s, 0, 10); len(got) != 0 {
		t.Errorf("a third sweep got %v, want none", keysOf(got))
	}
	// Swept is confirmed: a retry of it need not publish again.
	if a := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "b1", Envelope: []byte(`{}`)}); a.Pending {
		t.Error("a retry of a swept message is still Pending")
	}
}

// testOutboxSweepFailure: when publishing fails the entries stay.
func testOutboxSweepFailure(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "b1", Envelope: []byte(`{}`)})
	boom := errors.New("nats is down")
	_, err := s.SweepUnpublished(ctx(t), 0, 10, func([]store.Message) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("sweep with a failing publish: %v, want %v", err, boom)
	}
	if got := sweep(t, s, 0, 10); fmt.Sprint(keysOf(got)) != "[bob/1]" {
		t.Errorf("after a failed sweep the next got %v, want [bob/1]", keysOf(got))
	}
}

// testOutboxSweepLease: a sweep running while another holds entries is
// never given those entries.
func testOutboxSweepLease(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "b1", Envelope: []byte(`{}`)})
	mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "b2", Envelope: []byte(`{}`)})
	var outer, inner []store.Message
	if _, err := s.SweepUnpublished(ctx(t), 0, 1, func(ms []store.Message) error {
		outer = append(outer, ms...)
		inner = sweep(t, s, 0, 10) // a second sweep while the first holds bob/1
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(keysOf(outer)) != "[bob/1]" {
		t.Fatalf("outer sweep got %v, want [bob/1]", keysOf(outer))
	}
	for _, m := range inner {
		if m.Seq == 1 {
			t.Errorf("a concurrent sweep was given bob/1, which the first sweep held (got %v)", keysOf(inner))
		}
	}
	rest := sweep(t, s, 0, 10)
	if n := len(inner) + len(rest); n != 1 {
		t.Errorf("bob/2 was swept %d times after the first sweep (inner %v, then %v), want once", n, keysOf(inner), keysOf(rest))
	}
}

// testSharedSecret: the first candidate stored is every caller's value,
// however many ask at once.
func testSharedSecret(t *testing.T, s Store) {
	const callers = 8
	got := make([]string, callers)
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() { got[i], errs[i] = s.SharedSecret(ctx(t), "nats-keys", fmt.Sprintf("candidate-%d", i)) })
	}
	wg.Wait()
	for i := range callers {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		if got[i] != got[0] || !strings.HasPrefix(got[0], "candidate-") {
			t.Fatalf("callers got %q, want one stored candidate for all", got)
		}
	}
	if v, err := s.SharedSecret(ctx(t), "nats-keys", "late"); err != nil || v != got[0] {
		t.Errorf("a later caller got %q, %v; want %q", v, err, got[0])
	}
	if v, err := s.SharedSecret(ctx(t), "other", "its own"); err != nil || v != "its own" {
		t.Errorf("another name got %q, %v; want its own candidate", v, err)
	}
}
