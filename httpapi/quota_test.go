package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// Issue 10's quota: a send beyond the inbox's quota is 429 inbox_full and
// stores nothing; once messages are deleted (by the owner, or by
// retention) the inbox takes messages again.
func TestSendInboxFull(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(t *testing.T) testStore) {
		st := open(t)
		var ahead atomic.Int64 // how far the server's clock is ahead
		e := newEnvWithCore(t, st, nil, chat.Config{
			Quota:     store.Quota{Messages: 3, Bytes: 1 << 20},
			Retention: time.Hour,
			Now:       func() time.Time { return time.Now().Add(time.Duration(ahead.Load())) },
		})
		alice, bob := e.aliceAndBob()
		for _, id := range []string{"m1", "m2", "m3"} {
			e.mustSend(alice, "bob", id, `{"n":1}`)
		}
		e.send(alice, sendBody("bob", "m4", `{"n":1}`)).wantError(t, http.StatusTooManyRequests, protocol.CodeInboxFull)
		if n := e.messageCount("bob"); n != 3 {
			t.Fatalf("bob holds %d messages after a refused send, want 3", n)
		}
		// Another inbox is not affected.
		e.mustSend(bob, "alice", "to-alice", `{"n":1}`)

		// Delete-through frees room.
		if _, err := st.DeleteMessages(t.Context(), "bob", 1); err != nil {
			t.Fatal(err)
		}
		if seq := e.mustSend(alice, "bob", "m4", `{"n":1}`); seq != 4 {
			t.Errorf("the send after deleting got seq %d, want 4", seq)
		}
		e.send(alice, sendBody("bob", "m5", `{"n":1}`)).wantError(t, http.StatusTooManyRequests, protocol.CodeInboxFull)

		// So does retention, once the messages are older than it keeps.
		ahead.Store(int64(2 * time.Hour))
		n, err := e.svc.Expire(t.Context())
		ahead.Store(0)
		if err != nil || n != 4 {
			t.Fatalf("Expire = %d, %v; want 4 (bob's 3 and alice's 1)", n, err)
		}
		if n := e.messageCount("bob"); n != 0 {
			t.Fatalf("bob holds %d messages after retention", n)
		}
		e.mustSend(alice, "bob", "m5", `{"n":1}`)
	})
}

// A poll from a cursor before deleted messages is told so, as a stream
// would be: reset names the oldest message kept.
func TestPollResetAfterDeletion(t *testing.T) {
	st := openSQLite(t)
	e := newEnv(t, st)
	alice, bob := e.aliceAndBob()
	for i := range 4 {
		e.mustSend(alice, "bob", fmt.Sprint("m", i), `{}`)
	}
	if _, err := st.DeleteMessages(t.Context(), "bob", 2); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		since int64
		reset string
	}{
		{0, `"reset":{"oldest":3}`},
		{1, `"reset":{"oldest":3}`},
		{2, ""}, // the client has seen up to 2: nothing it lacks was deleted
		{3, ""},
	} {
		r := e.poll(bob, "bob", "since="+itoa(c.since), c.since)
		r.want(t, http.StatusOK)
		if got := strings.Contains(string(r.body), `"reset"`); got != (c.reset != "") || !strings.Contains(string(r.body), c.reset) {
			t.Errorf("poll since %d: %s, want %q", c.since, r.body, c.reset)
		}
	}
}

// A poll answer holds at most PollPageBytes of envelopes (at least one
// message), whatever its limit; next says where to go on.
func TestPollBoundedByBytes(t *testing.T) {
	st := openSQLite(t)
	e := newEnvWithCore(t, st, nil, chat.Config{PollPageBytes: 200 << 10})
	alice, bob := e.aliceAndBob()
	big := `"` + strings.Repeat("x", protocol.MaxEnvelope-2) + `"`
	for i := range 5 {
		e.mustSend(alice, "bob", fmt.Sprint("m", i), big)
	}
	var got protocol.Page
	r := e.poll(bob, "bob", "limit=1000", 0)
	r.want(t, http.StatusOK)
	r.decode(t, &got)
	if len(got.Messages) != 3 || got.Next != 3 {
		t.Fatalf("poll of 5 × 64 KiB under 200 KiB returned %d messages, next %d; want 3, 3", len(got.Messages), got.Next)
	}
}
