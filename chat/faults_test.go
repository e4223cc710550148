package chat_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// outage is a store whose appends fail as unavailable while down is set.
type outage struct {
	chat.Store
	down atomic.Bool
}

func (o *outage) AppendMessage(ctx context.Context, m store.NewMessage) (store.Appended, error) {
	if o.down.Load() {
		return store.Appended{}, fmt.Errorf("append: %w: connection refused", store.ErrUnavailable)
	}
	return o.Store.AppendMessage(ctx, m)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStoreOutageLoggedOnce: 200 sends refused during an outage make one
// warning (and summaries at most every few seconds), then one recovery line.
func TestStoreOutageLoggedOnce(t *testing.T) {
	db := &outage{Store: openSQLite(t)}
	var logs lockedBuffer
	svc := chat.New(chat.Config{}, db, nil, nil, slog.New(slog.NewTextHandler(&logs, nil)))
	db.down.Store(true)
	for i := range 200 {
		_, err := svc.Send(t.Context(), "alice", fmt.Appendf(nil, `{"to":"bob","id":"m%d","envelope":{}}`, i))
		if chat.AsError(err).Code != protocol.CodeUnavailable {
			t.Fatalf("send during the outage: %v, want unavailable", err)
		}
	}
	db.down.Store(false)
	send(t, svc, "after")
	out := logs.String()
	if n := strings.Count(out, `msg="store failing"`); n != 1 {
		t.Errorf("%d 'store failing' lines for 200 refused sends, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "\n"); n > 3 {
		t.Errorf("%d log lines for one outage, want at most 3:\n%s", n, out)
	}
	if !strings.Contains(out, `msg="store recovered" failures_total=200`) {
		t.Errorf("no recovery line counting the 200 failures:\n%s", out)
	}
}
