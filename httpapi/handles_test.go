package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

func TestRegisterAndLookup(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		e := newEnv(t, open(t))
		alice := newUser(t, "alice")

		r := e.do(http.MethodPost, "/v1/handles", alice.registerBody(now()), nil)
		r.want(t, http.StatusCreated)
		var created store.Handle
		r.decode(t, &created)
		if created.Handle != "alice" || created.SigningKey != alice.sk || created.EncryptionKey != alice.ek || created.CreatedAt.IsZero() {
			t.Fatalf("register returned %s", r.body)
		}

		r = e.do(http.MethodGet, "/v1/handles/alice", nil, nil)
		r.want(t, http.StatusOK)
		var got store.Handle
		r.decode(t, &got)
		if got != created {
			t.Fatalf("lookup %+v, want %+v", got, created)
		}

		e.do(http.MethodGet, "/v1/handles/nobody", nil, nil).wantError(t, http.StatusNotFound, protocol.CodeUnknownHandle)

		// HEAD is GET without the body.
		for path, status := range map[string]int{"/v1/handles/alice": http.StatusOK, "/v1/handles/nobody": http.StatusNotFound,
			"/.well-known/webfinger?resource=acct:alice@" + testDomain: http.StatusOK, "/healthz": http.StatusOK} {
			r := e.do(http.MethodHead, path, nil, nil)
			r.want(t, status)
			if len(r.body) != 0 {
				t.Errorf("HEAD %s: body %q", path, r.body)
			}
		}

		// The same handle again, with another key.
		other := newUser(t, "alice")
		e.do(http.MethodPost, "/v1/handles", other.registerBody(now()), nil).wantError(t, http.StatusConflict, protocol.CodeHandleTaken)

		// Alice's key for another handle.
		again := alice
		again.handle = "alice2"
		e.do(http.MethodPost, "/v1/handles", again.registerBody(now()), nil).wantError(t, http.StatusConflict, protocol.CodeKeyTaken)
	})
}

func TestRegisterErrors(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	bob := newUser(t, "bob")
	badSig := newUser(t, "bob")
	badSig.priv = newUser(t, "x").priv // signs with a key that is not the one it claims

	tests := []struct {
		name   string
		body   []byte
		status int
		code   protocol.Code
	}{
		{"bad signature", badSig.registerBody(now()), http.StatusUnauthorized, protocol.CodeBadSignature},
		{"stale timestamp", bob.registerBody(now() - 1000), http.StatusUnauthorized, protocol.CodeStaleTimestamp},
		{"future timestamp", bob.registerBody(now() + 1000), http.StatusUnauthorized, protocol.CodeStaleTimestamp},
		{"malformed JSON", []byte(`{"handle":"bob",`), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"not an object", []byte(`[1,2]`), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"ts as a string", bytes.Replace(bob.registerBody(now()), []byte(`"ts":`), []byte(`"ts":"1",`+`"x":`), 1), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"empty body", nil, http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"bad key", []byte(`{"handle":"bob","signing_key":"zz","encryption_key":"` + bob.ek + `","ts":1,"sig":"00"}`), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"too large", append([]byte(`{"handle":"bob","pad":"`), bytes.Repeat([]byte("x"), maxRegisterBody)...), http.StatusRequestEntityTooLarge, protocol.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.do(http.MethodPost, "/v1/handles", tt.body, nil).wantError(t, tt.status, tt.code)
		})
	}
	if _, err := e.st.Handle(t.Context(), "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("bob was stored after failed registrations: %v", err)
	}
}

// invalidHandles are rejected everywhere a handle appears, and store nothing.
var invalidHandles = []string{"a.b", "*", ">", "Alice", "a b", strings.Repeat("a", 33), "_a", "é"}

func TestInvalidHandles(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice := newUser(t, "alice")
	e.register(alice)

	for _, h := range invalidHandles {
		t.Run(h, func(t *testing.T) {
			u := newUser(t, h)
			e.do(http.MethodPost, "/v1/handles", u.registerBody(now()), nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidHandle)

			p := url.PathEscape(h)
			e.do(http.MethodGet, "/v1/handles/"+p, nil, nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidHandle)

			ts := now()
			e.do(http.MethodGet, "/v1/inbox/"+p, nil, http.Header{
				"Authorization": {alice.authHeader(identity.PollString(h, 0, ts), ts)},
			}).wantError(t, http.StatusBadRequest, protocol.CodeInvalidHandle)
			e.do(http.MethodGet, "/v1/inbox/"+p+"/stream?auth="+itoa(ts)+":"+identity.Sign(alice.priv, "x"), nil, nil).
				wantError(t, http.StatusBadRequest, protocol.CodeInvalidHandle)

			e.send(alice, sendBody(strings.ReplaceAll(h, `"`, ``), "m1", `{}`)).wantError(t, http.StatusBadRequest, protocol.CodeInvalidHandle)

			if _, err := e.st.Handle(context.WithoutCancel(t.Context()), h); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("handle %q: store lookup %v, want not found", h, err)
			}
		})
	}
}

// weakRegisterBody is a registration with the given keys, signed by the
// signature that verifies for every message under a small-order key:
// R = identity, S = 0.
func weakRegisterBody(handle, sk, ek string, ts int64) []byte {
	b, _ := json.Marshal(protocol.RegisterRequest{Handle: handle, SigningKey: sk, EncryptionKey: ek, TS: ts, Sig: constantSig})
	return b
}

// constantSig is R = identity, S = 0: with a small-order signing key it
// verifies for any message.
var constantSig = "01" + strings.Repeat("00", 63)

// identityPoint is the Ed25519 identity point's canonical encoding.
var identityPoint = "01" + strings.Repeat("00", 31)

func TestRegisterRefusesWeakKeys(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	good := newUser(t, "good")
	tests := []struct {
		name string
		body []byte
	}{
		{"identity signing key", weakRegisterBody("w1", identityPoint, good.ek, now())},
		{"order-2 signing key", weakRegisterBody("w2", "ec"+strings.Repeat("ff", 30)+"7f", good.ek, now())},
		{"non-canonical identity", weakRegisterBody("w3", "ee"+strings.Repeat("ff", 30)+"7f", good.ek, now())},
		{"order-8 signing key", weakRegisterBody("w4", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05", good.ek, now())},
		{"all-zero encryption key", good.withEK(strings.Repeat("00", 32)).registerBody(now())},
		{"order-8 encryption key", good.withEK("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").registerBody(now())},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.do(http.MethodPost, "/v1/handles", tt.body, nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
		})
	}
	for _, h := range []string{"w1", "w2", "w3", "w4", "good"} {
		if _, err := e.st.Handle(t.Context(), h); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s was stored: %v", h, err)
		}
	}
}

// A weak key stored before kezd refused them authenticates nothing: the
// constant signature does not let anyone poll or send as its handle.
func TestStoredWeakKeyAuthenticatesNothing(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	bob := newUser(t, "bob")
	e.register(bob)
	if _, err := e.st.CreateHandle(t.Context(), store.Handle{Handle: "weak", SigningKey: identityPoint, EncryptionKey: bob.ek}); err != nil {
		t.Fatal(err)
	}
	ts := now()
	auth := http.Header{"Authorization": {"Kez weak:" + itoa(ts) + ":" + constantSig}}
	e.do(http.MethodGet, "/v1/inbox/weak", nil, auth).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	e.do(http.MethodPost, "/v1/messages", sendBody("bob", "m1", `{}`), auth).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	if n := e.messageCount("bob"); n != 0 {
		t.Fatalf("bob has %d messages from the weak key", n)
	}
}
