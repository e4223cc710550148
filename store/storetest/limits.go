package storetest

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store"
)

// envelopeOf returns a JSON string envelope of exactly n bytes (n >= 2).
func envelopeOf(n int) []byte { return []byte(`"` + strings.Repeat("x", n-2) + `"`) }

func appendSized(t *testing.T, s Store, id string, size int, q store.Quota) (store.Appended, error) {
	t.Helper()
	return s.AppendMessage(ctx(t), store.NewMessage{From: "alice", To: "bob", ID: id, Envelope: envelopeOf(size), Quota: q})
}

func testListUpTo(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	for i, size := range []int{100, 100, 300, 50, 50} {
		mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint(i), Envelope: envelopeOf(size)})
	}
	cases := []struct {
		since           int64
		limit, maxBytes int
		want            []int64
	}{
		{0, 10, 0, []int64{1, 2, 3, 4, 5}},  // no bound
		{0, 10, 200, []int64{1, 2}},         // exactly the bound
		{0, 10, 199, []int64{1}},            // just under it
		{0, 10, 50, []int64{1}},             // always at least one
		{2, 10, 100, []int64{3}},            // one larger than the bound
		{2, 10, 400, []int64{3, 4, 5}},      // the rest
		{0, 2, 10000, []int64{1, 2}},        // limit still counts
		{5, 10, 100, []int64{}},             // nothing after the cursor
		{3, 10, 1 << 30, []int64{4, 5}},     // a large bound
		{0, 10, -1, []int64{1, 2, 3, 4, 5}}, // negative: no bound
	}
	for _, c := range cases {
		ms, err := s.ListMessagesUpTo(ctx(t), "bob", c.since, c.limit, c.maxBytes)
		if err != nil {
			t.Fatal(err)
		}
		if got := seqs(ms); !slices.Equal(got, c.want) {
			t.Errorf("ListMessagesUpTo(since %d, limit %d, %d bytes) = %v, want %v", c.since, c.limit, c.maxBytes, got, c.want)
		}
		for _, m := range ms {
			if m.From != "alice" || m.To != "bob" || len(m.Envelope) == 0 {
				t.Errorf("listed %+v", m)
			}
		}
	}
}

// wantFull checks that an append was refused as inbox full and stored nothing.
func wantFull(t *testing.T, s Store, a store.Appended, err error, holds int) {
	t.Helper()
	if !errors.Is(err, store.ErrInboxFull) {
		t.Fatalf("append beyond the quota: %+v, %v; want ErrInboxFull", a, err)
	}
	if ms := mustList(t, s, "bob", 0, 1000); len(ms) != holds {
		t.Fatalf("bob holds %d messages after a refused append, want %d", len(ms), holds)
	}
}

func testQuotaMessages(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	q := store.Quota{Messages: 3}
	for i := range 3 {
		if _, err := appendSized(t, s, fmt.Sprint("m", i), 10, q); err != nil {
			t.Fatalf("append %d of 3: %v", i, err)
		}
	}
	a, err := appendSized(t, s, "over", 10, q)
	wantFull(t, s, a, err, 3)
	if latest, _ := s.LatestSeq(ctx(t), "bob"); latest != 3 {
		t.Errorf("LatestSeq = %d after a refused append, want 3", latest)
	}
	// A larger quota, or none, admits it: the quota is the caller's.
	if _, err := appendSized(t, s, "other", 10, store.Quota{}); err != nil {
		t.Fatalf("append without a quota: %v", err)
	}
	// Deleting frees room; the seq after it is still the next one.
	if d, err := s.DeleteMessages(ctx(t), "bob", 2); err != nil || d.Count != 2 {
		t.Fatalf("DeleteMessages = %+v, %v", d, err)
	}
	a, err = appendSized(t, s, "over", 10, store.Quota{Messages: 3})
	if err != nil || a.Message.Seq != 5 {
		t.Fatalf("append after deleting: %+v, %v; want seq 5", a, err)
	}
	a, err = appendSized(t, s, "again", 10, q)
	wantFull(t, s, a, err, 3)
}

func testQuotaBytes(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	q := store.Quota{Bytes: 100}
	for i, size := range []int{40, 40} {
		if _, err := appendSized(t, s, fmt.Sprint("m", i), size, q); err != nil {
			t.Fatal(err)
		}
	}
	a, err := appendSized(t, s, "big", 21, q) // 101 bytes
	wantFull(t, s, a, err, 2)
	if _, err := appendSized(t, s, "fits", 20, q); err != nil { // exactly 100
		t.Fatalf("append up to the quota: %v", err)
	}
	a, err = appendSized(t, s, "small", 2, q)
	wantFull(t, s, a, err, 3)
	// Retention frees bytes as delete-through does.
	if n, err := s.DeleteSentBefore(ctx(t), time.Now().Add(time.Hour), 1); err != nil || n != 1 {
		t.Fatalf("DeleteSentBefore = %d, %v; want 1", n, err)
	}
	a, err = appendSized(t, s, "big", 41, store.Quota{Bytes: 100}) // 60 + 41
	wantFull(t, s, a, err, 2)
	if _, err := appendSized(t, s, "forty", 40, store.Quota{Bytes: 100}); err != nil {
		t.Fatalf("append into the room retention freed: %v", err)
	}
}

func testQuotaConcurrent(t *testing.T, s Store) {
	const senders, each, quota = 10, 10, 37
	register(t, s, "bob")
	for w := range senders {
		register(t, s, fmt.Sprint("s", w))
	}
	var mu sync.Mutex
	var stored []int64
	refused := 0
	var wg sync.WaitGroup
	for w := range senders {
		wg.Go(func() {
			for i := range each {
				a, err := s.AppendMessage(ctx(t), store.NewMessage{From: fmt.Sprint("s", w), To: "bob", ID: fmt.Sprint(i),
					Envelope: []byte(`{}`), Quota: store.Quota{Messages: quota}})
				mu.Lock()
				switch {
				case err == nil:
					stored = append(stored, a.Message.Seq)
				case errors.Is(err, store.ErrInboxFull):
					refused++
				default:
					t.Errorf("append: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(stored) != quota || refused != senders*each-quota {
		t.Fatalf("%d stored and %d refused, want %d and %d", len(stored), refused, quota, senders*each-quota)
	}
	slices.Sort(stored)
	for i, seq := range stored {
		if seq != int64(i+1) {
			t.Fatalf("stored seqs %v: gap", stored)
		}
	}
	if ms := mustList(t, s, "bob", 0, 1000); len(ms) != quota {
		t.Fatalf("bob holds %d messages, want %d", len(ms), quota)
	}
}

// A retry of a stored message is its original, even when the inbox is full.
func testQuotaDuplicateWhenFull(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	q := store.Quota{Messages: 1}
	first, err := appendSized(t, s, "m", 10, q)
	if err != nil {
		t.Fatal(err)
	}
	retry, err := appendSized(t, s, "m", 10, q)
	if err != nil || !retry.Duplicate || retry.Message.Seq != first.Message.Seq {
		t.Fatalf("retry into a full inbox: %+v, %v; want the duplicate of seq %d", retry, err, first.Message.Seq)
	}
}

func testDeleteSentBefore(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	register(t, s, "carol")
	start := time.Now().Add(-time.Second)
	for i := range 3 {
		mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint("b", i), Envelope: []byte(`1`)})
		mustAppend(t, s, store.NewMessage{From: "alice", To: "carol", ID: fmt.Sprint("c", i), Envelope: []byte(`1`)})
	}
	if n, err := s.DeleteSentBefore(ctx(t), start, 100); err != nil || n != 0 {
		t.Fatalf("DeleteSentBefore(before every message) = %d, %v; want 0", n, err)
	}
	later := time.Now().Add(time.Minute)
	var total int64
	for {
		n, err := s.DeleteSentBefore(ctx(t), later, 4)
		if err != nil {
			t.Fatal(err)
		}
		if n > 4 {
			t.Fatalf("deleted %d in a batch of 4", n)
		}
		total += n
		if n == 0 {
			break
		}
	}
	if total != 6 {
		t.Fatalf("deleted %d, want 6", total)
	}
	for _, h := range []string{"bob", "carol"} {
		if ms := mustList(t, s, h, 0, 100); len(ms) != 0 {
			t.Errorf("%s holds %v after retention", h, seqs(ms))
		}
		if latest, _ := s.LatestSeq(ctx(t), h); latest != 3 {
			t.Errorf("LatestSeq(%s) = %d after retention, want 3 (seqs are never reused)", h, latest)
		}
	}
	// The usage went with them: a quota of 1 admits one message.
	if _, err := appendSized(t, s, "after", 10, store.Quota{Messages: 1}); err != nil {
		t.Fatalf("append after retention emptied the inbox: %v", err)
	}
	if a := mustList(t, s, "bob", 0, 10); len(a) != 1 || a[0].Seq != 4 {
		t.Errorf("bob holds %v, want [4]", seqs(a))
	}
}
