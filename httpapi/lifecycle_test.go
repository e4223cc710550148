package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// rotateBody is a rotation of cur's handle to next's keys, signed by both.
func rotateBody(cur, next user, ts int64) []byte {
	msg := identity.RotateString(cur.handle, next.sk, next.ek, ts)
	b, _ := json.Marshal(protocol.RotateRequest{
		SigningKey: next.sk, EncryptionKey: next.ek, TS: ts,
		Sig: identity.Sign(cur.priv, msg), NewSig: identity.Sign(next.priv, msg),
	})
	return b
}

func (e *env) rotate(cur, next user) response {
	e.t.Helper()
	return e.do(http.MethodPost, "/v1/handles/"+cur.handle+"/keys", rotateBody(cur, next, now()), nil)
}

func (e *env) deleteHandle(signer user, handle string) response {
	e.t.Helper()
	ts := now()
	return e.do(http.MethodDelete, "/v1/handles/"+handle, nil, http.Header{
		"Authorization": {signer.authHeader(identity.DeleteHandleString(handle, ts), ts)},
	})
}

func (e *env) deleteThrough(signer user, handle string, through int64) response {
	e.t.Helper()
	ts := now()
	return e.do(http.MethodDelete, "/v1/inbox/"+handle+"?through="+itoa(through), nil, http.Header{
		"Authorization": {signer.authHeader(identity.DeleteThroughString(handle, through, ts), ts)},
	})
}

// longPoll starts a waiting poll of u's inbox signed by u, and returns
// where its response arrives.
func (e *env) longPoll(u user, since int64) <-chan response {
	e.t.Helper()
	ts := now()
	req, err := http.NewRequestWithContext(e.t.Context(), http.MethodGet, e.url+"/v1/inbox/"+u.handle+"?wait=30&since="+itoa(since), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", u.authHeader(identity.PollString(u.handle, since, ts), ts))
	out := make(chan response, 1)
	go func() {
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- response{status: -1, body: []byte(err.Error())}
			return
		}
		defer res.Body.Close()
		var buf [4096]byte
		n, _ := res.Body.Read(buf[:])
		out <- response{status: res.StatusCode, header: res.Header, body: buf[:n]}
	}()
	return out
}

// waitSessions waits until handle has n streams and long-polls open.
func (e *env) waitSessions(handle string, n int) {
	e.t.Helper()
	testwait.Until(e.t, fmt.Sprintf("%d sessions of %s to open", n, handle), func() bool { return e.svc.Sessions(handle) >= n })
}

// A rotation ends the old key's streams and long-polls, and the old key
// authenticates nothing after it; lookups show the new keys, and ?at= the
// old ones as of before.
func TestRotateKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		b := startBroker(t)
		e := newEnvWithBroker(t, open(t), b)
		alice, bob := e.aliceAndBob()
		registered := e.do(http.MethodGet, "/v1/handles/alice", nil, nil)
		var before store.Handle
		registered.decode(t, &before)
		e.mustSend(bob, "alice", "m1", `1`)

		stream := e.openStream(streamPath(alice, "alice", "since=0"), nil)
		stream.wantMessage(1)
		stream.wantReady(1)
		poll := e.longPoll(alice, 1)
		e.waitSessions("alice", 2)

		next := newUser(t, "alice")
		r := e.rotate(alice, next)
		r.want(t, http.StatusOK)
		var got store.Handle
		r.decode(t, &got)
		if got.Handle != "alice" || got.SigningKey != next.sk || got.EncryptionKey != next.ek || !got.CreatedAt.Equal(before.CreatedAt) {
			t.Fatalf("rotation returned %s, want alice with the new keys", r.body)
		}

		// Everything the old key opened ends.
		stream.wantEnd()
		(<-poll).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)

		// The old key authenticates nothing.
		e.poll(alice, "alice", "", 0).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
		e.send(alice, sendBody("bob", "late", `1`)).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
		e.deleteThrough(alice, "alice", 1).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
		e.deleteHandle(alice, "alice").wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
		e.rotate(alice, newUser(t, "alice")).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
		if s := e.openStream(streamPath(alice, "alice", ""), nil); s.res.StatusCode != http.StatusUnauthorized {
			t.Fatalf("stream with the old key: status %d, want 401", s.res.StatusCode)
		}

		// The new one does, and the stored message stayed.
		e.poll(next, "alice", "", 0).want(t, http.StatusOK)
		if e.messageCount("alice") != 1 {
			t.Fatalf("alice has %d messages after rotating, want 1", e.messageCount("alice"))
		}
		var looked store.Handle
		e.do(http.MethodGet, "/v1/handles/alice", nil, nil).decode(t, &looked)
		if looked.SigningKey != next.sk || looked.EncryptionKey != next.ek {
			t.Fatalf("lookup after rotation = %+v, want the new keys", looked)
		}
		// Key history: as of the message sent before, the old keys.
		var then store.Handle
		e.do(http.MethodGet, "/v1/handles/alice?at="+before.CreatedAt.Format(time.RFC3339Nano), nil, nil).decode(t, &then)
		if then.SigningKey != alice.sk || then.EncryptionKey != alice.ek {
			t.Fatalf("lookup at registration = %+v, want the old keys", then)
		}
		e.do(http.MethodGet, "/v1/handles/alice?at=yesterday", nil, nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
		e.do(http.MethodGet, "/v1/handles/alice?at=1", nil, nil).wantError(t, http.StatusNotFound, protocol.CodeUnknownHandle)
		// Any time after the rotation is the new keys, however far ahead
		// (the largest Unix seconds overflowed the stores' microseconds).
		for _, at := range []string{"999999999999999999", "9223372036854775807", "9999-12-31T23:59:59Z"} {
			var later store.Handle
			e.do(http.MethodGet, "/v1/handles/alice?at="+at, nil, nil).decode(t, &later)
			if later.SigningKey != next.sk {
				t.Fatalf("lookup at %s = %+v, want the new keys", at, later)
			}
		}

		// The retired key is never registrable again.
		mallory := alice
		mallory.handle = "mallory"
		e.do(http.MethodPost, "/v1/handles", mallory.registerBody(now()), nil).wantError(t, http.StatusConflict, protocol.CodeKeyTaken)
	})
}

func TestRotateErrors(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice, bob := e.aliceAndBob()
	next := newUser(t, "alice")
	ts := now()
	msg := identity.RotateString("alice", next.sk, next.ek, ts)
	body := func(f func(*protocol.RotateRequest)) []byte {
		r := protocol.RotateRequest{SigningKey: next.sk, EncryptionKey: next.ek, TS: ts,
			Sig: identity.Sign(alice.priv, msg), NewSig: identity.Sign(next.priv, msg)}
		f(&r)
		b, _ := json.Marshal(r)
		return b
	}
	post := func(handle string, b []byte) response {
		return e.do(http.MethodPost, "/v1/handles/"+handle+"/keys", b, nil)
	}
	post("alice", []byte(`{"signing_key":"`+next.sk+`"}`)).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
	post("alice", body(func(r *protocol.RotateRequest) { r.SigningKey = "zz" })).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
	post("alice", body(func(r *protocol.RotateRequest) { r.NewSig = identity.Sign(alice.priv, msg) })).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	post("alice", body(func(r *protocol.RotateRequest) { r.Sig = identity.Sign(next.priv, msg) })).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	post("alice", body(func(r *protocol.RotateRequest) { r.TS = ts - 3600 })).wantError(t, http.StatusUnauthorized, protocol.CodeStaleTimestamp)
	// Weak keys are refused at rotation as at registration.
	post("alice", body(func(r *protocol.RotateRequest) { r.SigningKey = identityPoint })).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
	post("alice", body(func(r *protocol.RotateRequest) { r.EncryptionKey = strings.Repeat("00", 32) })).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
	post("nobody", body(func(*protocol.RotateRequest) {})).wantError(t, http.StatusUnauthorized, protocol.CodeUnauthorized)
	post("Alice", body(func(*protocol.RotateRequest) {})).wantError(t, http.StatusBadRequest, protocol.CodeInvalidHandle)
	// Signed for bob's path: the canonical string names the handle.
	post("bob", body(func(*protocol.RotateRequest) {})).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	// To a key another handle holds.
	toBob := identity.RotateString("alice", bob.sk, next.ek, ts)
	post("alice", body(func(r *protocol.RotateRequest) {
		r.SigningKey, r.Sig, r.NewSig = bob.sk, identity.Sign(alice.priv, toBob), identity.Sign(bob.priv, toBob)
	})).wantError(t, http.StatusConflict, protocol.CodeKeyTaken)

	// Only the encryption key: the current signing key, twice.
	ekOnly := alice
	ekOnly.ek = next.ek
	e.rotate(alice, ekOnly).want(t, http.StatusOK)
	var looked store.Handle
	e.do(http.MethodGet, "/v1/handles/alice", nil, nil).decode(t, &looked)
	if looked.SigningKey != alice.sk || looked.EncryptionKey != next.ek {
		t.Fatalf("after rotating the encryption key lookup = %+v", looked)
	}
	e.poll(alice, "alice", "", 0).want(t, http.StatusOK)
}

func TestDeleteHandle(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		b := startBroker(t)
		e := newEnvWithBroker(t, open(t), b)
		alice, bob := e.aliceAndBob()
		e.mustSend(bob, "alice", "m1", `1`)
		e.mustSend(bob, "alice", "m2", `2`)
		e.mustSend(alice, "bob", "to-bob", `3`)

		stream := e.openStream(streamPath(alice, "alice", ""), nil)
		stream.wantReady(2)
		poll := e.longPoll(alice, 2)
		e.waitSessions("alice", 2)

		e.deleteHandle(bob, "alice").wantError(t, http.StatusForbidden, protocol.CodeForbidden)
		r := e.deleteHandle(alice, "alice")
		r.want(t, http.StatusOK)
		var d struct {
			Handle    string    `json:"handle"`
			DeletedAt time.Time `json:"deleted_at"`
		}
		r.decode(t, &d)
		if d.Handle != "alice" || time.Since(d.DeletedAt) > time.Minute {
			t.Fatalf("deletion returned %s", r.body)
		}
		stream.wantEnd()
		(<-poll).wantError(t, http.StatusUnauthorized, protocol.CodeUnauthorized)

		if n := e.messageCount("alice"); n != 0 {
			t.Fatalf("alice's inbox holds %d messages after deletion, want 0", n)
		}
		if n := e.messageCount("bob"); n != 1 {
			t.Fatalf("bob's inbox holds %d messages, want the 1 alice sent him", n)
		}
		e.send(bob, sendBody("alice", "late", `1`)).wantError(t, http.StatusNotFound, protocol.CodeUnknownHandle)
		e.do(http.MethodGet, "/v1/handles/alice", nil, nil).wantError(t, http.StatusNotFound, protocol.CodeUnknownHandle)
		e.do(http.MethodGet, "/.well-known/webfinger?resource=acct:alice@"+testDomain, nil, nil).want(t, http.StatusNotFound)
		e.poll(alice, "alice", "", 0).wantError(t, http.StatusUnauthorized, protocol.CodeUnauthorized)
		e.do(http.MethodPost, "/v1/handles", newUser(t, "alice").registerBody(now()), nil).wantError(t, http.StatusConflict, protocol.CodeHandleTaken)
		again := alice
		again.handle = "alice2"
		e.do(http.MethodPost, "/v1/handles", again.registerBody(now()), nil).wantError(t, http.StatusConflict, protocol.CodeKeyTaken)
	})
}

func TestDeleteThrough(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		e := newEnv(t, open(t))
		alice, bob := e.aliceAndBob()
		for _, id := range []string{"m1", "m2", "m3", "m4", "m5"} {
			e.mustSend(alice, "bob", id, `1`)
		}
		for _, c := range []struct {
			through int64
			want    string
		}{
			{3, `{"deleted":3,"oldest":4}`},
			{3, `{"deleted":0,"oldest":4}`}, // repeating it is harmless
		} {
			r := e.deleteThrough(bob, "bob", c.through)
			r.want(t, http.StatusOK)
			if string(r.body) != c.want+"\n" && string(r.body) != c.want {
				t.Fatalf("delete through %d: %s, want %s", c.through, r.body, c.want)
			}
		}
		if n := e.messageCount("bob"); n != 2 {
			t.Fatalf("bob has %d messages, want 2", n)
		}
		if seq := e.mustSend(alice, "bob", "m6", `1`); seq != 6 {
			t.Fatalf("the next message got seq %d, want 6", seq)
		}
		s := e.openStream(streamPath(bob, "bob", "since=1"), nil)
		s.wantReset(4)
		s.wantMessage(4)
		s.wantMessage(5)
		s.wantMessage(6)

		e.deleteThrough(alice, "bob", 9).wantError(t, http.StatusForbidden, protocol.CodeForbidden)
		e.do(http.MethodDelete, "/v1/inbox/bob", nil, nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
		e.do(http.MethodDelete, "/v1/inbox/bob?through=x", nil, nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
		e.do(http.MethodDelete, "/v1/inbox/bob?through=9", nil, nil).wantError(t, http.StatusUnauthorized, protocol.CodeUnauthorized)
		r := e.deleteThrough(bob, "bob", 99)
		r.want(t, http.StatusOK)
		var res protocol.DeleteResult
		r.decode(t, &res)
		if res.Deleted != 3 || res.Oldest != nil || string(r.body) != `{"deleted":3,"oldest":null}`+"\n" && string(r.body) != `{"deleted":3,"oldest":null}` {
			t.Fatalf("delete through 99: %s, want 3 deleted and oldest null", r.body)
		}
	})
}
