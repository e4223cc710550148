package natsapi_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/natsapi"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// setup runs an open embedded server, a SQLite store with alice and bob, and
// the send responder on the core; it returns a client connection. Login and
// permissions are the auth callout's tests; here every client may publish.
func setup(t *testing.T) *nats.Conn {
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
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "kez.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	for _, h := range []string{"alice", "bob"} {
		key := strings.Repeat(h[:1], 64)
		if _, err := db.CreateHandle(context.Background(), store.Handle{Handle: h, SigningKey: strings.Map(hexDigit, key), EncryptionKey: strings.Repeat("0", 64)}); err != nil {
			t.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	r, err := natsapi.StartSend(context.Background(), nc, natsapi.SendConfig{}, chat.New(chat.Config{}, db, nil, nil, log), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return nc
}

// hexDigit maps handle letters onto hex digits for distinct fake keys.
func hexDigit(r rune) rune { return 'a' + (r-'a')%6 }

func TestSendReplies(t *testing.T) {
	t.Parallel()
	nc := setup(t)
	tests := []struct {
		name, subject, body, want string
	}{
		{"created", "kez.chat.send.alice", `{"to":"bob","id":"m1","envelope":{"x":"<&>"}}`, `{"seq":1,"to":"bob","id":"m1","sent_at":`},
		{"duplicate", "kez.chat.send.alice", `{"to":"bob","id":"m1","envelope":{"x":"<&>"}}`, `"duplicate":true}`},
		{"unknown recipient", "kez.chat.send.alice", `{"to":"carol","id":"m2","envelope":1}`, `{"error":"unknown_handle","message":"no handle \"carol\""}`},
		{"bad json", "kez.chat.send.alice", `{`, `{"error":"invalid_request","message":`},
		{"bad recipient", "kez.chat.send.alice", `{"to":"Bob","id":"m3","envelope":1}`, `{"error":"invalid_handle",`},
		{"too large", "kez.chat.send.alice", `{"to":"bob","id":"m4","envelope":"` + strings.Repeat("a", chat.MaxEnvelope) + `"}`, `{"error":"too_large",`},
		{"bad sender", "kez.chat.send.Alice", `{"to":"bob","id":"m5","envelope":1}`, `{"error":"invalid_handle",`},
	}
	for _, tt := range tests {
		// In order: the duplicate depends on the first send.
		reply, err := nc.Request(tt.subject, []byte(tt.body), 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if !strings.Contains(string(reply.Data), tt.want) {
			t.Errorf("%s: reply %s, want it to contain %s", tt.name, reply.Data, tt.want)
		}
	}
}
