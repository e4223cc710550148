package httpapi

import (
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

// writeLog is a connection that records each Write.
type writeLog struct {
	net.Conn // nil: only Write and SetWriteDeadline are called
	writes   [][]byte
}

func (c *writeLog) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func (c *writeLog) SetWriteDeadline(time.Time) error { return nil }

// A burst of events (up to Follow's EventFlush) goes out in one write; a
// burst too big to hold is written as it grows, never all at once.
func TestEventWriterCoalescesBursts(t *testing.T) {
	t.Parallel()
	msg := func(seq int64, json string) chat.Event {
		return chat.Event{Kind: chat.EventMessage, Message: protocol.Encoded{Seq: seq, JSON: []byte(json)}}
	}
	conn := &writeLog{}
	w := &eventWriter{conn: conn, timeout: time.Second, frames: &sync.Pool{}}
	for _, ev := range []chat.Event{msg(1, `{"seq":1}`), msg(2, `{"seq":2}`), {Kind: chat.EventReady, Latest: 2}} {
		if err := w.event(ev); err != nil {
			t.Fatal(err)
		}
	}
	if len(conn.writes) != 0 {
		t.Fatalf("%d writes before the flush", len(conn.writes))
	}
	if err := w.event(chat.Event{Kind: chat.EventFlush}); err != nil {
		t.Fatal(err)
	}
	want := "id: 1\nevent: message\ndata: {\"seq\":1}\n\n" + "id: 2\nevent: message\ndata: {\"seq\":2}\n\n" + "id: 2\nevent: ready\ndata: {\"latest\":2}\n\n"
	if len(conn.writes) != 1 || string(conn.writes[0]) != want {
		t.Fatalf("writes %q, want one: %q", conn.writes, want)
	}
	if w.pending != nil {
		t.Error("the writer holds a buffer after the burst")
	}

	// A flush with nothing held writes nothing.
	if err := w.event(chat.Event{Kind: chat.EventFlush}); err != nil || len(conn.writes) != 1 {
		t.Errorf("empty flush: %v, %d writes", err, len(conn.writes))
	}

	big := `"` + strings.Repeat("x", 10<<10) + `"`
	conn.writes = nil
	for i := range 10 {
		if err := w.event(msg(int64(10+i), big)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.event(chat.Event{Kind: chat.EventFlush}); err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range conn.writes {
		if len(b) > maxHeld+len(big)+64 {
			t.Errorf("one write of %d bytes, more than held frames may reach", len(b))
		}
		total += len(b)
	}
	if len(conn.writes) < 2 || total != 10*(len(big)+len("id: 10\nevent: message\ndata: \n\n")) {
		t.Errorf("%d writes, %d bytes", len(conn.writes), total)
	}
}
