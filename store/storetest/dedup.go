package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store"
)

// PROTOCOL.md: "(sender, id) is unique": a retry of a message that has been
// deleted since, by delete-through or by retention, is still its duplicate
// (with the seq, recipient and sent_at it was stored with) and stores
// nothing, until its id is forgotten.
func testRetryOfDeletedMessage(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	first := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`1`)})
	second := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m2", Envelope: []byte(`2`)})
	if d, err := s.DeleteMessages(ctx(t), "bob", first.Message.Seq); err != nil || d.Count != 1 {
		t.Fatalf("DeleteMessages = %+v, %v; want 1 deleted", d, err)
	}
	retry := func(id string, want store.Appended) {
		t.Helper()
		got := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: id, Envelope: []byte(`"again"`)})
		if !got.Duplicate || got.Pending || got.Message.Seq != want.Message.Seq || got.Message.To != "bob" ||
			got.Message.From != "alice" || got.Message.ID != id || !got.Message.SentAt.Equal(want.Message.SentAt) {
			t.Errorf("retry of deleted %s = %+v, want a duplicate of seq %d sent at %v, not pending",
				id, got, want.Message.Seq, want.Message.SentAt)
		}
	}
	for id, want := range map[string]store.Appended{"m1": first, "m2": second} {
		m, err := s.Sent(ctx(t), "alice", id)
		if err != nil || m.Seq != want.Message.Seq || m.To != "bob" || m.ID != id || !m.SentAt.Equal(want.Message.SentAt) {
			t.Errorf("Sent(alice, %s) = %+v, %v; want seq %d", id, m, err, want.Message.Seq)
		}
	}
	if _, err := s.Sent(ctx(t), "alice", "never"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Sent of an id never sent: %v, want store.ErrNotFound", err)
	}
	retry("m1", first)
	if ms := mustList(t, s, "bob", 0, 100); len(ms) != 1 || ms[0].Seq != second.Message.Seq {
		t.Errorf("after a retry of a deleted message bob holds %v, want [%d]", seqs(ms), second.Message.Seq)
	}
	if latest, _ := s.LatestSeq(ctx(t), "bob"); latest != second.Message.Seq {
		t.Errorf("LatestSeq = %d after the retry, want %d: nothing new stored", latest, second.Message.Seq)
	}

	// Retention too.
	if n, err := s.DeleteSentBefore(ctx(t), time.Now().Add(time.Minute), 100); err != nil || n != 1 {
		t.Fatalf("DeleteSentBefore = %d, %v; want 1", n, err)
	}
	retry("m2", second)
	retry("m1", first)

	// Forgetting ids deleted before a time leaves later ones.
	if n, err := s.ForgetDeletedIDs(ctx(t), time.Now().Add(-time.Hour), 100); err != nil || n != 0 {
		t.Fatalf("ForgetDeletedIDs(an hour ago) = %d, %v; want 0", n, err)
	}
	retry("m1", first)
	var total int64
	for {
		n, err := s.ForgetDeletedIDs(ctx(t), time.Now().Add(time.Minute), 1)
		if err != nil || n > 1 {
			t.Fatalf("ForgetDeletedIDs(limit 1) = %d, %v", n, err)
		}
		if total += n; n == 0 {
			break
		}
	}
	if total != 2 {
		t.Fatalf("forgot %d ids, want 2", total)
	}
	// Forgotten: a retry is a new message now.
	again := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`3`)})
	if again.Duplicate || again.Message.Seq != second.Message.Seq+1 {
		t.Errorf("send of a forgotten id = %+v, want a new message with seq %d", again, second.Message.Seq+1)
	}
	// Deleting that one remembers it again, and replaces nothing it should not.
	if _, err := s.DeleteMessages(ctx(t), "bob", again.Message.Seq); err != nil {
		t.Fatal(err)
	}
	retry("m1", again)
}

// A retry of a deleted message to a handle that has since been deleted is
// unknown_handle, as every send to it is; the handle's own deletion
// remembers nothing.
func testRetryToDeletedHandle(t *testing.T, s Store) {
	register(t, s, "alice")
	bob := register(t, s, "bob")
	var last store.Appended
	for i := range 3 {
		last = mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint("m", i), Envelope: []byte(`1`)})
	}
	if _, err := s.DeleteMessages(ctx(t), "bob", last.Message.Seq-1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteHandle(ctx(t), "bob", bob.SigningKey); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, err := s.AppendMessage(ctx(t), store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint("m", i), Envelope: []byte(`1`)})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("retry of m%d to the deleted bob: %v, want store.ErrNotFound", i, err)
		}
	}
}
