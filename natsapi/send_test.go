package natsapi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/natsapi"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// setup runs an open embedded server, a SQLite store with alice and bob, and
// the send responder on the core; it returns a client connection. Login and
// permissions are the auth callout's tests; here every client may publish.
func setup(t *testing.T, cfg natsapi.SendConfig, core ...chat.Config) *server.Server {
	t.Helper()
	s, _ := setupStore(t, cfg, core...)
	return s
}

// setupStore is setup, and its store.
func setupStore(t *testing.T, cfg natsapi.SendConfig, core ...chat.Config) (*server.Server, *sqlite.DB) {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("not ready")
	}
	db := teststore.SQLite(t)
	for _, h := range []string{"alice", "bob"} {
		key := strings.Repeat(h[:1], 64)
		if _, err := db.CreateHandle(context.Background(), store.Handle{Handle: h, SigningKey: strings.Map(hexDigit, key), EncryptionKey: strings.Repeat("0", 64)}); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	nc := connect(t, s, "kezd")
	var ccfg chat.Config
	if len(core) > 0 {
		ccfg = core[0]
	}
	r, err := natsapi.StartSend(context.Background(), nc, cfg, chat.New(ccfg, db, nil, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return s, db
}

// connect is a client whose requests use handle's reply inbox, as the auth
// callout's permissions require (_INBOX.<handle>.>).
func connect(t *testing.T, s *server.Server, handle string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL(), nats.CustomInboxPrefix("_INBOX."+handle))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// hexDigit maps handle letters onto hex digits for distinct fake keys.
func hexDigit(r rune) rune { return 'a' + (r-'a')%6 }

func TestSendReplies(t *testing.T) {
	t.Parallel()
	s := setup(t, natsapi.SendConfig{})
	conns := map[string]*nats.Conn{"alice": connect(t, s, "alice"), "Alice": connect(t, s, "Alice")}
	tests := []struct {
		name, subject, body, want string
	}{
		{"created", "kez.chat.send.alice", `{"to":"bob","id":"m1","envelope":{"x":"<&>"}}`, `{"seq":1,"to":"bob","id":"m1","sent_at":`},
		{"duplicate", "kez.chat.send.alice", `{"to":"bob","id":"m1","envelope":{"x":"<&>"}}`, `"duplicate":true}`},
		{"unknown recipient", "kez.chat.send.alice", `{"to":"carol","id":"m2","envelope":1}`, `{"error":"unknown_handle","message":"no handle \"carol\""}`},
		{"bad json", "kez.chat.send.alice", `{`, `{"error":"invalid_request","message":`},
		{"bad recipient", "kez.chat.send.alice", `{"to":"Bob","id":"m3","envelope":1}`, `{"error":"invalid_handle",`},
		{"too large", "kez.chat.send.alice", `{"to":"bob","id":"m4","envelope":"` + strings.Repeat("a", protocol.MaxEnvelope) + `"}`, `{"error":"too_large",`},
		{"to and TO", "kez.chat.send.alice", `{"to":"bob","TO":"alice","id":"m6","envelope":1}`, `{"error":"invalid_request","message":"unknown member \"TO\"`},
		{"to twice", "kez.chat.send.alice", `{"to":"alice","to":"bob","id":"m7","envelope":1}`, `{"error":"invalid_request",`},
		{"envelope too deep", "kez.chat.send.alice", `{"to":"bob","id":"m8","envelope":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`, `{"error":"invalid_request",`},
		{"bad sender", "kez.chat.send.Alice", `{"to":"bob","id":"m5","envelope":1}`, `{"error":"invalid_handle",`},
	}
	for _, tt := range tests {
		// In order: the duplicate depends on the first send.
		nc := conns[strings.TrimPrefix(tt.subject, "kez.chat.send.")]
		reply, err := nc.Request(tt.subject, []byte(tt.body), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !strings.Contains(string(reply.Data), tt.want) {
			t.Errorf("%s: reply %s, want it to contain %s", tt.name, reply.Data, tt.want)
		}
	}
}

// TestSendFromDeletedHandleRefused: a connection still logged in as a
// handle that has been deleted (it is closed within 2 s, but may publish
// before) sends nothing: the sender no longer authenticates, as on HTTP.
func TestSendFromDeletedHandleRefused(t *testing.T) {
	t.Parallel()
	s, db := setupStore(t, natsapi.SendConfig{})
	ctx := context.Background()
	alice, err := db.Handle(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteHandle(ctx, "alice", alice.SigningKey); err != nil {
		t.Fatal(err)
	}
	nc := connect(t, s, "alice")
	reply, err := nc.Request("kez.chat.send.alice", []byte(`{"to":"bob","id":"m1","envelope":1}`), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"error":"unauthorized","message":"signer \"alice\" is not registered"}`; string(reply.Data) != want {
		t.Errorf("reply %s, want %s", reply.Data, want)
	}
	msgs, err := db.ListMessages(ctx, "bob", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 0 {
		t.Errorf("bob's inbox has %d messages from a deleted sender, want none", len(msgs))
	}
}

// TestSendRefusesForeignReplySubject: kezd replies with its own, unlimited
// user, so a reply subject outside the sender's reply inbox (here bob's
// inbox subject, which no client may publish to) must not be answered, and
// the send is refused.
func TestSendRefusesForeignReplySubject(t *testing.T) {
	t.Parallel()
	// One worker: requests are handled in the order they arrive.
	s := setup(t, natsapi.SendConfig{Workers: 1})
	alice, bob := connect(t, s, "alice"), connect(t, s, "bob")
	leaked := make(chan *nats.Msg, 1)
	if _, err := bob.ChanSubscribe("kez.chat.inbox.bob", leaked); err != nil {
		t.Fatal(err)
	}
	if err := bob.Flush(); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"to":"bob","id":"trick","envelope":1}`)
	if err := alice.PublishRequest("kez.chat.send.alice", "kez.chat.inbox.bob", body); err != nil {
		t.Fatal(err)
	}
	// The same send, properly addressed, is new: the trick stored nothing.
	reply, err := alice.Request("kez.chat.send.alice", body, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(reply.Data); !strings.HasPrefix(got, `{"seq":1,`) || strings.Contains(got, "duplicate") {
		t.Fatalf("reply %s: the refused send was stored", got)
	}
	if err := bob.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-leaked:
		t.Fatalf("kezd published on bob's inbox: %s", m.Data)
	default:
	}
}

// A send beyond a rate limit gets the same error object as over HTTP, and
// the Retry-After header in whole seconds.
func TestSendRateLimited(t *testing.T) {
	t.Parallel()
	lim := ratelimit.New(ratelimit.Config{Limits: map[ratelimit.Name]ratelimit.Limit{ratelimit.Sends: {Burst: 2, Per: time.Hour}}})
	s := setup(t, natsapi.SendConfig{}, chat.Config{Limits: lim})
	nc := connect(t, s, "alice")
	for i := range 3 {
		msg, err := nc.Request("kez.chat.send.alice", []byte(`{"to":"bob","id":"m`+strconv.Itoa(i)+`","envelope":1}`), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i < 2 {
			if !strings.HasPrefix(string(msg.Data), `{"seq":`) {
				t.Fatalf("send %d: %s", i, msg.Data)
			}
			continue
		}
		var body protocol.ErrorBody
		if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error != protocol.CodeRateLimited || body.Message == "" {
			t.Fatalf("send beyond the limit: %s", msg.Data)
		}
		if n, err := strconv.Atoi(msg.Header.Get(protocol.RetryAfterHeader)); err != nil || n < 1 {
			t.Fatalf("Retry-After %q, want whole seconds", msg.Header.Get(protocol.RetryAfterHeader))
		}
	}
}

// TestSendInboxFull: a NATS send beyond the recipient's quota gets the same
// error object as HTTP's 429 inbox_full, with its Retry-After header.
func TestSendInboxFull(t *testing.T) {
	t.Parallel()
	s := setup(t, natsapi.SendConfig{}, chat.Config{Quota: store.Quota{Messages: 1}})
	nc := connect(t, s, "alice")
	for i := range 2 {
		msg, err := nc.Request("kez.chat.send.alice", []byte(`{"to":"bob","id":"q`+strconv.Itoa(i)+`","envelope":1}`), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if !strings.HasPrefix(string(msg.Data), `{"seq":`) {
				t.Fatalf("send within the quota: %s", msg.Data)
			}
			continue
		}
		var body protocol.ErrorBody
		if err := json.Unmarshal(msg.Data, &body); err != nil || body.Error != protocol.CodeInboxFull {
			t.Fatalf("send beyond the quota: %s", msg.Data)
		}
		if n, err := strconv.Atoi(msg.Header.Get(protocol.RetryAfterHeader)); err != nil || n < 1 {
			t.Fatalf("Retry-After %q, want whole seconds", msg.Header.Get(protocol.RetryAfterHeader))
		}
	}
}
