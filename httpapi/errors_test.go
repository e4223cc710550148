package httpapi

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

func TestRouterErrors(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	e.do(http.MethodGet, "/v2/nothing", nil, nil).wantError(t, http.StatusNotFound, codeNotFound)
	e.do(http.MethodPut, "/v1/handles/alice", nil, nil).wantError(t, http.StatusMethodNotAllowed, codeMethodNotAllowed)
}

func TestStatusOfEveryCode(t *testing.T) {
	want := map[protocol.Code]int{
		protocol.CodeInvalidRequest: 400, protocol.CodeInvalidHandle: 400,
		protocol.CodeBadSignature: 401, protocol.CodeStaleTimestamp: 401, protocol.CodeUnauthorized: 401,
		protocol.CodeForbidden: 403, protocol.CodeUnknownHandle: 404,
		protocol.CodeHandleTaken: 409, protocol.CodeKeyTaken: 409,
		protocol.CodeTooLarge: 413, protocol.CodeRateLimited: 429, protocol.CodeInboxFull: 429,
		protocol.CodeUnavailable: 503, protocol.CodeInternal: 500,
	}
	for code, status := range want {
		if statusOf[code] != status {
			t.Errorf("%s: %d, want %d", code, statusOf[code], status)
		}
	}
}

// brokenLookup is the real service with a Lookup that fails in a way the
// client must not see.
type brokenLookup struct{ *chat.Service }

func (brokenLookup) Lookup(context.Context, string) (store.Handle, error) {
	return store.Handle{}, errors.New("dial tcp 10.0.0.7:5432: connection refused")
}

func TestInternalErrorIsNotSent(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	svc := chat.New(chat.Config{}, openSQLite(t), nil, nil, log)
	hs := httptest.NewServer(New(Config{}, brokenLookup{svc}, log).Handler())
	t.Cleanup(hs.Close)
	e := &env{t: t, url: hs.URL}

	r := e.do(http.MethodGet, "/v1/handles/alice", nil, nil)
	r.wantError(t, http.StatusInternalServerError, protocol.CodeInternal)
	if bytes.Contains(r.body, []byte("10.0.0.7")) {
		t.Fatalf("the cause reached the client: %s", r.body)
	}
	if !bytes.Contains(logs.Bytes(), []byte("10.0.0.7")) {
		t.Fatalf("the cause was not logged: %s", logs.Bytes())
	}
}

// TestResponseHeaders: every answer, success or error, tells browsers not
// to sniff its type and caches not to store it; the stream says no-cache,
// as PROTOCOL.md has it, and nosniff too.
func TestResponseHeaders(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	bob := newUser(t, "bob")
	answers := map[string]response{
		"register":         e.do(http.MethodPost, "/v1/handles", bob.registerBody(now()), nil),
		"lookup":           e.do(http.MethodGet, "/v1/handles/bob", nil, nil),
		"unknown handle":   e.do(http.MethodGet, "/v1/handles/nobody", nil, nil),
		"no such endpoint": e.do(http.MethodGet, "/nowhere", nil, nil),
		"wrong method":     e.do(http.MethodDelete, "/v1/messages", nil, nil),
		"unsigned send":    e.do(http.MethodPost, "/v1/messages", sendBody("bob", "m1", "{}"), nil),
		"poll":             e.poll(bob, "bob", "", 0),
		"webfinger":        e.do(http.MethodGet, "/.well-known/webfinger?resource=acct:bob@"+testDomain, nil, nil),
		"healthz":          e.do(http.MethodGet, "/healthz", nil, nil),
	}
	for name, r := range answers {
		if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
			t.Errorf("%s (%d): X-Content-Type-Options %q, want nosniff", name, r.status, got)
		}
		if got := r.header.Get("Cache-Control"); got != "no-store" {
			t.Errorf("%s (%d): Cache-Control %q, want no-store", name, r.status, got)
		}
	}
	s := e.openStream(streamPath(bob, "bob", ""), nil)
	if s.res.StatusCode != http.StatusOK || s.res.Header.Get("Cache-Control") != "no-cache" || s.res.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("stream: %d with headers %v", s.res.StatusCode, s.res.Header)
	}
}
