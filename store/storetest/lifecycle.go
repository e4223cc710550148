package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store"
)

func rotate(t *testing.T, s Store, h store.Handle, sk, ek string) store.Handle {
	t.Helper()
	got, err := s.RotateKeys(ctx(t), h.Handle, h.SigningKey, store.Handle{SigningKey: sk, EncryptionKey: ek})
	if err != nil {
		t.Fatalf("rotate %s: %v", h.Handle, err)
	}
	return got
}

func testRotateKeys(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	sk, ek := randomKey(), randomKey()
	got := rotate(t, s, alice, sk, ek)
	want := store.Handle{Handle: "alice", SigningKey: sk, EncryptionKey: ek, CreatedAt: alice.CreatedAt}
	if !sameHandle(got, want) {
		t.Errorf("RotateKeys = %+v, want %+v", got, want)
	}
	if looked, err := s.Handle(ctx(t), "alice"); err != nil || !sameHandle(looked, want) {
		t.Errorf("Handle after rotation = %+v, %v; want %+v", looked, err, want)
	}
	if byKey, err := s.HandleByKey(ctx(t), sk); err != nil || !sameHandle(byKey, want) {
		t.Errorf("HandleByKey(new) = %+v, %v; want %+v", byKey, err, want)
	}
	if _, err := s.HandleByKey(ctx(t), alice.SigningKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HandleByKey(retired) error = %v, want ErrNotFound", err)
	}
	// The rotation was asked for with the old key: a second one with it lost the race.
	if _, err := s.RotateKeys(ctx(t), "alice", alice.SigningKey, store.Handle{SigningKey: randomKey(), EncryptionKey: randomKey()}); !errors.Is(err, store.ErrKeyChanged) {
		t.Errorf("rotation with a retired current key: error = %v, want ErrKeyChanged", err)
	}
	if _, err := s.RotateKeys(ctx(t), "nobody", sk, store.Handle{SigningKey: randomKey(), EncryptionKey: randomKey()}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rotation of an unknown handle: error = %v, want ErrNotFound", err)
	}
	// A retired signing key is never registrable again.
	if _, err := s.CreateHandle(ctx(t), store.Handle{Handle: "mallory", SigningKey: alice.SigningKey, EncryptionKey: randomKey()}); !errors.Is(err, store.ErrKeyTaken) {
		t.Errorf("registering a retired key: error = %v, want ErrKeyTaken", err)
	}
}

func testRotateEncryptionKeyOnly(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	ek := randomKey()
	got := rotate(t, s, alice, alice.SigningKey, ek)
	if got.SigningKey != alice.SigningKey || got.EncryptionKey != ek {
		t.Errorf("RotateKeys = %+v, want signing key %s, encryption key %s", got, alice.SigningKey, ek)
	}
	if byKey, err := s.HandleByKey(ctx(t), alice.SigningKey); err != nil || byKey.EncryptionKey != ek {
		t.Errorf("HandleByKey = %+v, %v; want encryption key %s", byKey, err, ek)
	}
}

func testRotateRefusesUsedKeys(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	bob := register(t, s, "bob")
	if _, err := s.RotateKeys(ctx(t), "alice", alice.SigningKey, store.Handle{SigningKey: bob.SigningKey, EncryptionKey: randomKey()}); !errors.Is(err, store.ErrKeyTaken) {
		t.Errorf("rotating to bob's key: error = %v, want ErrKeyTaken", err)
	}
	second := rotate(t, s, alice, randomKey(), randomKey())
	// Back to her own retired key: refused too.
	if _, err := s.RotateKeys(ctx(t), "alice", second.SigningKey, store.Handle{SigningKey: alice.SigningKey, EncryptionKey: randomKey()}); !errors.Is(err, store.ErrKeyTaken) {
		t.Errorf("rotating back to a retired key: error = %v, want ErrKeyTaken", err)
	}
	if got, err := s.Handle(ctx(t), "alice"); err != nil || !sameHandle(got, second) {
		t.Errorf("after refused rotations Handle = %+v, %v; want %+v", got, err, second)
	}
}

func testKeyHistory(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	second := rotate(t, s, alice, randomKey(), randomKey())
	third := rotate(t, s, second, second.SigningKey, randomKey())

	for _, c := range []struct {
		name string
		at   time.Time
		want store.Handle
	}{
		{"at registration", alice.CreatedAt, alice},
		{"later", time.Now().Add(time.Hour), third},
	} {
		got, err := s.HandleAt(ctx(t), "alice", c.at)
		if err != nil || got.SigningKey != c.want.SigningKey || got.EncryptionKey != c.want.EncryptionKey || !got.CreatedAt.Equal(alice.CreatedAt) {
			t.Errorf("%s: HandleAt = %+v, %v; want the keys of %+v", c.name, got, err, c.want)
		}
	}
	if _, err := s.HandleAt(ctx(t), "alice", alice.CreatedAt.Add(-time.Hour)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HandleAt before registration: error = %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteHandle(ctx(t), "alice", third.SigningKey); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HandleAt(ctx(t), "alice", alice.CreatedAt); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HandleAt of a deleted handle: error = %v, want ErrNotFound", err)
	}
}

func testDeleteHandle(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	register(t, s, "bob")
	for i := range 3 {
		mustAppend(t, s, store.NewMessage{From: "bob", To: "alice", ID: fmt.Sprintf("to-alice-%d", i), Envelope: []byte(`{}`)})
	}
	sentByAlice := mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "to-bob", Envelope: []byte(`{}`)}).Message

	if _, err := s.DeleteHandle(ctx(t), "alice", randomKey()); !errors.Is(err, store.ErrKeyChanged) {
		t.Errorf("DeleteHandle with a key not hers: error = %v, want ErrKeyChanged", err)
	}
	before := time.Now().Add(-time.Second)
	at, err := s.DeleteHandle(ctx(t), "alice", alice.SigningKey)
	if err != nil {
		t.Fatal(err)
	}
	if at.Location() != time.UTC || at.Before(before) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("deleted at %v, want now in UTC", at)
	}

	if ms := mustList(t, s, "alice", 0, 100); len(ms) != 0 {
		t.Errorf("alice's inbox after deletion holds seqs %v, want none", seqs(ms))
	}
	if got := mustList(t, s, "bob", 0, 100); len(got) != 1 || !sameMessage(got[0], sentByAlice) {
		t.Errorf("bob's inbox = %+v, want the message alice sent him, kept", got)
	}
	if _, err := s.Handle(ctx(t), "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Handle(deleted) error = %v, want ErrNotFound", err)
	}
	if _, err := s.HandleByKey(ctx(t), alice.SigningKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("HandleByKey(deleted) error = %v, want ErrNotFound", err)
	}
	if _, err := s.AppendMessage(ctx(t), store.NewMessage{From: "bob", To: "alice", ID: "late", Envelope: []byte(`{}`)}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("append to a deleted handle: error = %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteHandle(ctx(t), "alice", alice.SigningKey); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting again: error = %v, want ErrNotFound", err)
	}
	if _, err := s.RotateKeys(ctx(t), "alice", alice.SigningKey, store.Handle{SigningKey: randomKey(), EncryptionKey: randomKey()}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("rotating a deleted handle: error = %v, want ErrNotFound", err)
	}
	if _, err := s.CreateHandle(ctx(t), store.Handle{Handle: "alice", SigningKey: randomKey(), EncryptionKey: randomKey()}); !errors.Is(err, store.ErrHandleTaken) {
		t.Errorf("re-registering the handle: error = %v, want ErrHandleTaken", err)
	}
	if _, err := s.CreateHandle(ctx(t), alice); !errors.Is(err, store.ErrHandleTaken) {
		t.Errorf("re-registering the handle with its own keys: error = %v, want ErrHandleTaken", err)
	}
	if _, err := s.CreateHandle(ctx(t), store.Handle{Handle: "alice2", SigningKey: alice.SigningKey, EncryptionKey: randomKey()}); !errors.Is(err, store.ErrKeyTaken) {
		t.Errorf("registering the deleted handle's key: error = %v, want ErrKeyTaken", err)
	}
	if latest, err := s.LatestSeq(ctx(t), "alice"); err != nil || latest != 0 {
		t.Errorf("LatestSeq(deleted) = %d, %v; want 0", latest, err)
	}
}

// A send racing a deletion is either stored and deleted with the inbox, or
// refused: never left in the inbox of a deleted handle.
func testSendRacingDeletion(t *testing.T, s Store) {
	alice := register(t, s, "alice")
	register(t, s, "bob")
	const senders, each = 8, 20
	start := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	stored, refused := 0, 0
	// The deletion starts once a send is stored, so that it meets sends
	// both before and after it.
	firstStored := make(chan struct{})
	var once sync.Once
	for w := range senders {
		wg.Go(func() {
			<-start
			for i := range each {
				_, err := s.AppendMessage(ctx(t), store.NewMessage{From: "bob", To: "alice", ID: fmt.Sprintf("w%d-%d", w, i), Envelope: []byte(`{}`)})
				mu.Lock()
				switch {
				case err == nil:
					stored++
					once.Do(func() { close(firstStored) })
				case errors.Is(err, store.ErrNotFound):
					refused++
				default:
					t.Errorf("append: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Go(func() {
		<-firstStored
		if _, err := s.DeleteHandle(ctx(t), "alice", alice.SigningKey); err != nil {
			t.Errorf("delete: %v", err)
		}
	})
	close(start)
	wg.Wait()
	if ms := mustList(t, s, "alice", 0, 1000); len(ms) != 0 {
		t.Errorf("the deleted inbox holds seqs %v, want none", seqs(ms))
	}
	t.Logf("%d sends stored (then deleted), %d refused", stored, refused)
	if refused == 0 {
		t.Errorf("no send was refused: the deletion did not race them")
	}
	if stored+refused != senders*each {
		t.Errorf("%d stored + %d refused, want %d in all", stored, refused, senders*each)
	}
}

func testDeleteMessagesThrough(t *testing.T, s Store) {
	register(t, s, "alice")
	register(t, s, "bob")
	for i := range 5 {
		mustAppend(t, s, store.NewMessage{From: "bob", To: "alice", ID: fmt.Sprintf("m%d", i), Envelope: []byte(`{}`)})
	}
	mustAppend(t, s, store.NewMessage{From: "alice", To: "bob", ID: "other", Envelope: []byte(`{}`)})

	for _, c := range []struct {
		name    string
		through int64
		want    store.Deleted
		left    []int64
	}{
		{"none", 0, store.Deleted{Count: 0, Oldest: 1}, []int64{1, 2, 3, 4, 5}},
		{"first three", 3, store.Deleted{Count: 3, Oldest: 4}, []int64{4, 5}},
		{"repeated", 3, store.Deleted{Count: 0, Oldest: 4}, []int64{4, 5}},
		{"beyond the latest", 99, store.Deleted{Count: 2, Oldest: 0}, []int64{}},
	} {
		got, err := s.DeleteMessages(ctx(t), "alice", c.through)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got != c.want {
			t.Errorf("%s: DeleteMessages(%d) = %+v, want %+v", c.name, c.through, got, c.want)
		}
		if left := seqs(mustList(t, s, "alice", 0, 100)); fmt.Sprint(left) != fmt.Sprint(c.left) {
			t.Errorf("%s: seqs left %v, want %v", c.name, left, c.left)
		}
	}
	if latest, err := s.LatestSeq(ctx(t), "alice"); err != nil || latest != 5 {
		t.Errorf("LatestSeq after deleting everything = %d, %v; want 5", latest, err)
	}
	// Seqs are never reused.
	if m := mustAppend(t, s, store.NewMessage{From: "bob", To: "alice", ID: "after", Envelope: []byte(`{}`)}).Message; m.Seq != 6 {
		t.Errorf("next message got seq %d, want 6", m.Seq)
	}
	if got := mustList(t, s, "bob", 0, 100); len(got) != 1 {
		t.Errorf("bob's inbox holds %d messages, want his 1 untouched", len(got))
	}
}
