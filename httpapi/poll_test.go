package httpapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

type pollResult struct {
	Messages []struct {
		Seq  int64  `json:"seq"`
		From string `json:"from"`
		To   string `json:"to"`
		ID   string `json:"id"`
	} `json:"messages"`
	Next *int64 `json:"next"`
}

func TestPoll(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		e := newEnv(t, open(t))
		alice, bob := e.aliceAndBob()

		// Empty inbox: an empty list, not null, and next = since.
		r := e.poll(bob, "bob", "", 0)
		r.want(t, http.StatusOK)
		var empty pollResult
		r.decode(t, &empty)
		if empty.Messages == nil || len(empty.Messages) != 0 || empty.Next == nil || *empty.Next != 0 {
			t.Fatalf("empty poll returned %s", r.body)
		}

		for _, id := range []string{"a", "b", "c", "d", "e"} {
			e.mustSend(alice, "bob", id, `{"id":"`+id+`"}`)
		}

		tests := []struct {
			query    string
			since    int64
			wantSeqs []int64
			wantNext int64
		}{
			{"", 0, []int64{1, 2, 3, 4, 5}, 5},
			{"since=2", 2, []int64{3, 4, 5}, 5},
			{"since=1&limit=2", 1, []int64{2, 3}, 3},
			{"since=5", 5, nil, 5},
			{"since=9", 9, nil, 9},
			{"limit=5000", 0, []int64{1, 2, 3, 4, 5}, 5},
		}
		for _, tt := range tests {
			t.Run(tt.query, func(t *testing.T) {
				r := e.poll(bob, "bob", tt.query, tt.since)
				r.want(t, http.StatusOK)
				var got pollResult
				r.decode(t, &got)
				if len(got.Messages) != len(tt.wantSeqs) || got.Next == nil || *got.Next != tt.wantNext {
					t.Fatalf("got %s, want seqs %v next %d", r.body, tt.wantSeqs, tt.wantNext)
				}
				for i, m := range got.Messages {
					if m.Seq != tt.wantSeqs[i] || m.From != "alice" || m.To != "bob" {
						t.Fatalf("message %d is %+v, want seq %d from alice to bob", i, m, tt.wantSeqs[i])
					}
				}
			})
		}
	})
}

func TestPollErrors(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	alice, bob, mallory := newUser(t, "alice"), newUser(t, "bob"), newUser(t, "mallory")
	e.register(alice)
	e.register(bob)
	e.mustSend(alice, "bob", "m1", `"secret"`)

	ts := now()
	header := func(v string) http.Header { return http.Header{"Authorization": {v}} }
	tests := []struct {
		name   string
		path   string
		header http.Header
		status int
		code   protocol.Code
	}{
		{"no authorization", "/v1/inbox/bob", nil, http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"malformed authorization", "/v1/inbox/bob", header("Kez bob:notanumber:00"), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"unregistered signer", "/v1/inbox/mallory", header(mallory.authHeader(identity.PollString("mallory", 0, ts), ts)), http.StatusUnauthorized, protocol.CodeUnauthorized},
		{"bad signature", "/v1/inbox/bob", header(bob.authHeader(identity.PollString("bob", 1, ts), ts)), http.StatusUnauthorized, protocol.CodeBadSignature},
		{"signature for the stream", "/v1/inbox/bob", header(bob.authHeader(identity.StreamString("bob", ts), ts)), http.StatusUnauthorized, protocol.CodeBadSignature},
		{"stale timestamp", "/v1/inbox/bob", header(bob.authHeader(identity.PollString("bob", 0, ts-1000), ts-1000)), http.StatusUnauthorized, protocol.CodeStaleTimestamp},
		{"another handle's inbox", "/v1/inbox/bob", header(alice.authHeader(identity.PollString("bob", 0, ts), ts)), http.StatusForbidden, protocol.CodeForbidden},
		{"unknown handle's inbox", "/v1/inbox/carol", header(alice.authHeader(identity.PollString("carol", 0, ts), ts)), http.StatusForbidden, protocol.CodeForbidden},
		{"negative since", "/v1/inbox/bob?since=-1", header(bob.authHeader(identity.PollString("bob", 0, ts), ts)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"leading zero since", "/v1/inbox/bob?since=07", header(bob.authHeader(identity.PollString("bob", 7, ts), ts)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"leading zero ts", "/v1/inbox/bob", header(fmt.Sprintf("Kez bob:0%d:%s", ts, identity.Sign(bob.priv, identity.PollString("bob", 0, ts)))), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"since not a number", "/v1/inbox/bob?since=x", header(bob.authHeader(identity.PollString("bob", 0, ts), ts)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"limit zero", "/v1/inbox/bob?limit=0", header(bob.authHeader(identity.PollString("bob", 0, ts), ts)), http.StatusBadRequest, protocol.CodeInvalidRequest},
		{"wait not a number", "/v1/inbox/bob?wait=1.5", header(bob.authHeader(identity.PollString("bob", 0, ts), ts)), http.StatusBadRequest, protocol.CodeInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.do(http.MethodGet, tt.path, nil, tt.header).wantError(t, tt.status, tt.code)
		})
	}
}

func TestLongPollTimesOutEmpty(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	bob := newUser(t, "bob")
	e.register(bob)

	r := e.poll(bob, "bob", "since=0&wait=1", 0)
	r.want(t, http.StatusOK)
	var got pollResult
	r.decode(t, &got)
	if len(got.Messages) != 0 || got.Next == nil || *got.Next != 0 {
		t.Fatalf("long-poll of an empty inbox returned %s", r.body)
	}
}
