package httpapi

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

func TestSend(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		e := newEnv(t, open(t))
		alice, bob := e.aliceAndBob()

		// An envelope with characters an HTML-escaping encoder would rewrite,
		// odd number spellings and key order: it must come back as sent.
		envelope := `{"z":1,"a":"<b>&amp;</b>","n":1.50,"e":1e3,"u":"\u00e9\u003c"}`
		body := sendBody("bob", "m-1", envelope)
		r := e.send(alice, body)
		r.want(t, http.StatusCreated)
		var res struct {
			Seq       int64  `json:"seq"`
			To        string `json:"to"`
			ID        string `json:"id"`
			SentAt    string `json:"sent_at"`
			Duplicate *bool  `json:"duplicate"`
		}
		r.decode(t, &res)
		if res.Seq != 1 || res.To != "bob" || res.ID != "m-1" || res.SentAt == "" || res.Duplicate != nil {
			t.Fatalf("send returned %s", r.body)
		}

		// A retry with the same id: 200, duplicate, the original seq, nothing new stored.
		r = e.send(alice, body)
		r.want(t, http.StatusOK)
		var dup protocol.SendResult
		r.decode(t, &dup)
		if !dup.Duplicate || dup.Seq != 1 {
			t.Fatalf("retry returned %s", r.body)
		}
		if n := e.messageCount("bob"); n != 1 {
			t.Fatalf("bob has %d messages after a retry, want 1", n)
		}

		// The envelope comes back byte for byte.
		r = e.poll(bob, "bob", "", 0)
		r.want(t, http.StatusOK)
		if !bytes.Contains(r.body, []byte(`"envelope":`+envelope)) {
			t.Fatalf("poll body %s does not hold the envelope as sent", r.body)
		}

		// The exact bytes are hashed and parsed, whatever the content type.
		body2 := []byte("  " + string(sendBody("bob", "m-2", `[1, 2]`)) + "\n")
		ts := now()
		e.do(http.MethodPost, "/v1/messages", body2, http.Header{
			"Authorization": {alice.authHeader(identity.SendString(identity.BodySHA256(body2), ts), ts)},
			"Content-Type":  {"text/plain"},
		}).want(t, http.StatusCreated)
	})
}

func TestSendErrors(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice, bob, mallory := newUser(t, "alice"), newUser(t, "bob"), newUser(t, "mallory")
	e.register(alice)
	e.register(bob)

	body := sendBody("bob", "m1", `{"c":"x"}`)
	ts := now()
	sendString := identity.SendString(identity.BodySHA256(body), ts)
	otherBody := sendBody("bob", "m2", `{"c":"x"}`)

	bigEnvelope := `"` + strings.Repeat("x", protocol.MaxEnvelope-1) + `"` // MaxEnvelope+1 bytes of JSON
	signed := func(u user, b []byte) http.Header {
		ts := now()
		return http.Header{"Authorization": {u.authHeader(identity.SendString(identity.BodySHA256(b), ts), ts)}}
	}

	tests := []struct {
		name   string
		body   []byte
		header http.Header
		status int
		code   protocol.Code
	}{
		{"no authorization", body, nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"malformed authorization", body, http.Header{"Authorization": {"Kez alice"}}, http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"wrong scheme", body, http.Header{"Authorization": {"Bearer x"}}, http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"unregistered signer", body, http.Header{"Authorization": {mallory.authHeader(sendString, ts)}}, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"bad signature", body, http.Header{"Authorization": {alice.authHeader(identity.SendString(identity.BodySHA256(otherBody), ts), ts)}}, http.StatusUnauthorized, protocol.CodeBadSignature},
		{"signed by someone else's key", body, http.Header{"Authorization": {"Kez alice:" + itoa(ts) + ":" + identity.Sign(bob.priv, sendString)}}, http.StatusUnauthorized, protocol.CodeBadSignature},
		{"stale timestamp", body, http.Header{"Authorization": {alice.authHeader(identity.SendString(identity.BodySHA256(body), ts-1000), ts-1000)}}, http.StatusUnauthorized, protocol.CodeStaleTimestamp},
		{"unknown recipient", sendBody("carol", "m1", `1`), signed(alice, sendBody("carol", "m1", `1`)), http.StatusNotFound, protocol.CodeUnknownHandle},
		{"malformed JSON", []byte(`{"to":"bob",`), signed(alice, []byte(`{"to":"bob",`)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"missing envelope", []byte(`{"to":"bob","id":"m1"}`), signed(alice, []byte(`{"to":"bob","id":"m1"}`)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"bad client id", sendBody("bob", "a.b", `1`), signed(alice, sendBody("bob", "a.b", `1`)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"envelope just over 64 KiB", sendBody("bob", "big", bigEnvelope), signed(alice, sendBody("bob", "big", bigEnvelope)), http.StatusRequestEntityTooLarge, protocol.CodeTooLarge},
		{"body over the limit", sendBody("bob", "huge", `"`+strings.Repeat("x", protocol.MaxSendBody)+`"`), signed(alice, nil), http.StatusRequestEntityTooLarge, protocol.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.do(http.MethodPost, "/v1/messages", tt.body, tt.header).wantError(t, tt.status, tt.code)
		})
	}
	if n := e.messageCount("bob"); n != 0 {
		t.Fatalf("bob has %d messages after failed sends", n)
	}

	t.Run("envelope of exactly 64 KiB", func(t *testing.T) {
		env := `"` + strings.Repeat("y", protocol.MaxEnvelope-2) + `"`
		seq := e.mustSend(alice, "bob", "max", env)
		ms, err := e.st.ListMessages(t.Context(), "bob", seq-1, 1)
		if err != nil || len(ms) != 1 || string(ms[0].Envelope) != env {
			t.Fatalf("stored envelope differs (err %v)", err)
		}
	})
}

// countingReader is an endless body that counts what the server read.
type countingReader struct {
	n     atomic.Int64
	limit int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.n.Load() >= r.limit {
		return 0, io.EOF
	}
	for i := range p {
		p[i] = 'x'
	}
	r.n.Add(int64(len(p)))
	return len(p), nil
}

func TestSendHugeBodyIsNotRead(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice := newUser(t, "alice")
	e.register(alice)
	const huge = 1 << 30

	for _, declared := range []bool{true, false} {
		name := "chunked"
		if declared {
			name = "declared length"
		}
		t.Run(name, func(t *testing.T) {
			body := &countingReader{limit: huge}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.url+"/v1/messages", body)
			if err != nil {
				t.Fatal(err)
			}
			if declared {
				req.ContentLength = huge
			}
			ts := now()
			req.Header.Set("Authorization", alice.authHeader(identity.SendString(strings.Repeat("0", 64), ts), ts))
			doRequest(t, req).wantError(t, http.StatusRequestEntityTooLarge, protocol.CodeTooLarge)
			// The transport may have pushed some more into socket buffers,
			// but nowhere near the whole body.
			if n := body.n.Load(); n > 64<<20 {
				t.Fatalf("client wrote %d bytes of a %d-byte body before the 413", n, huge)
			}
		})
	}
}

// TestSendStrictBody: a body that could mean two things, or holds an
// envelope deeper than any client can decode, is refused and stores nothing.
func TestSendStrictBody(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice, bob, carol := newUser(t, "alice"), newUser(t, "bob"), newUser(t, "carol")
	for _, u := range []user{alice, bob, carol} {
		e.register(u)
	}
	deep := strings.Repeat("[", 9999) + strings.Repeat("]", 9999)
	for name, body := range map[string]string{
		"to and TO":     `{"to":"bob","TO":"carol","id":"m1","envelope":{}}`,
		"to twice":      `{"to":"bob","to":"carol","id":"m2","envelope":{}}`,
		"unknown":       `{"to":"bob","id":"m3","envelope":{},"extra":1}`,
		"deep envelope": `{"to":"bob","id":"m4","envelope":` + deep + `}`,
	} {
		t.Run(name, func(t *testing.T) {
			e.send(alice, []byte(body)).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
		})
	}
	if n, m := e.messageCount("bob"), e.messageCount("carol"); n+m != 0 {
		t.Fatalf("stored %d for bob and %d for carol", n, m)
	}
}

// TestRegisterStrictBody: the same strictness on registration.
func TestRegisterStrictBody(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	bob := newUser(t, "bob")
	body := bob.registerBody(now())
	for name, b := range map[string][]byte{
		"handle twice":  bytes.Replace(body, []byte(`{`), []byte(`{"handle":"mallory",`), 1),
		"Handle":        bytes.Replace(body, []byte(`{`), []byte(`{"Handle":"mallory",`), 1),
		"trailing data": append(append([]byte{}, body...), []byte(`{}`)...),
	} {
		t.Run(name, func(t *testing.T) {
			e.do(http.MethodPost, "/v1/handles", b, nil).wantError(t, http.StatusBadRequest, protocol.CodeInvalidRequest)
		})
	}
	e.register(bob)
}
