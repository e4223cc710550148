package chat_test

import (
	"context"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// The store is the truth: a stream whose key was replaced behind the
// service's back (by another instance whose announcement never came) ends
// at its next check of the store, with the error the key would get now; a
// waiting long-poll likewise.
func TestSessionsEndWhenTheStoreRetiresTheirKey(t *testing.T) {
	t.Parallel()
	for _, b := range teststore.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := openBackend(t, b)
			// No broker: the stream reads the store every second, and checks
			// its key each time.
			svc := newService(db, nil)
			bob := owner(t, svc, "bob")
			stream := make(chan error, 1)
			go func() {
				stream <- svc.Follow(t.Context(), bob, chat.Cursor{Now: true}, func(chat.Event) error { return nil })
			}()
			poll := make(chan error, 1)
			go func() {
				_, err := svc.Poll(t.Context(), bob, 0, 10, protocol.MaxPollWait)
				poll <- err
			}()
			testwait.Until(t, "bob's stream and long-poll to open", func() bool { return svc.Sessions("bob") >= 2 })

			// Another instance rotates: only the store knows.
			if _, err := db.RotateKeys(context.Background(), "bob", bob.SigningKey,
				store.Handle{SigningKey: "ff" + bob.SigningKey[2:], EncryptionKey: bob.EncryptionKey}); err != nil {
				t.Fatal(err)
			}
			for name, ch := range map[string]chan error{"stream": stream, "long-poll": poll} {
				select {
				case err := <-ch:
					if e := chat.AsError(err); err == nil || e.Code != protocol.CodeBadSignature {
						t.Fatalf("%s ended with %v, want bad_signature", name, err)
					}
				case <-time.After(15 * time.Second):
					t.Fatalf("%s did not end after its key was retired in the store", name)
				}
			}
			if n := svc.Sessions("bob"); n != 0 {
				t.Fatalf("%d sessions still registered", n)
			}
		})
	}
}
