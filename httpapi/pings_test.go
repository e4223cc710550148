package httpapi

import (
	"bytes"
	"io"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

// timedLog is a connection that records when each Write came.
type timedLog struct {
	net.Conn // nil: only Write and SetWriteDeadline are called
	mu       sync.Mutex
	at       []time.Time
	frames   []string
}

func (c *timedLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.at, c.frames = append(c.at, time.Now()), append(c.frames, string(p))
	return len(p), nil
}

func (c *timedLog) SetWriteDeadline(time.Time) error { return nil }

func (c *timedLog) log() ([]time.Time, []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.at...), append([]string(nil), c.frames...)
}

// The ping wheel fills every silence of PingInterval, at most one tick
// early, leaves a stream that writes alone, stops pinging a stream taken
// out, and ends its goroutine once no stream is left (synctest.Test fails
// if it is still running at the end).
func TestPingWheel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const every = 16 * time.Second
		tick := every / wheelSlots
		p := newPingWheel(every)
		newStream := func() (*eventWriter, *timedLog) {
			conn := &timedLog{}
			w := &eventWriter{conn: conn, timeout: time.Second, frames: &sync.Pool{}, onPingFail: func() { t.Error("a ping failed") }}
			p.add(w)
			return w, conn
		}
		start := time.Now()
		idle, idleLog := newStream()
		busy, busyLog := newStream()

		// busy writes every 5 s for a minute; idle writes nothing.
		for i := range 12 {
			time.Sleep(5 * time.Second)
			msg := chat.Event{Kind: chat.EventMessage, Message: protocol.Encoded{Seq: int64(i + 1), JSON: []byte(`{}`)}}
			for _, ev := range []chat.Event{msg, {Kind: chat.EventFlush}} {
				if err := busy.event(ev); err != nil {
					t.Fatal(err)
				}
			}
		}
		synctest.Wait()

		at, frames := idleLog.log()
		if len(at) < 3 {
			t.Fatalf("%d pings in %s of silence, want at least 3", len(at), time.Since(start))
		}
		prev := start
		for i, a := range at {
			if frames[i] != pingFrame {
				t.Errorf("idle stream wrote %q, want a ping", frames[i])
			}
			if gap := a.Sub(prev); gap > every || gap < every-tick {
				t.Errorf("ping %d after a silence of %s, want %s to %s", i, gap, every-tick, every)
			}
			prev = a
		}
		if last := time.Since(prev); last > every {
			t.Errorf("no ping for the last %s", last)
		}
		_, busyFrames := busyLog.log()
		for _, f := range busyFrames {
			if strings.Contains(f, pingFrame) {
				t.Errorf("a stream that writes every 5 s was pinged: %q", busyFrames)
				break
			}
		}

		idle.stopPings()
		busy.stopPings()
		n := len(at)
		time.Sleep(3 * every)
		if at, _ := idleLog.log(); len(at) != n {
			t.Errorf("%d pings after the stream was taken out", len(at)-n)
		}
		p.mu.Lock()
		running := p.running
		p.mu.Unlock()
		if running {
			t.Error("the wheel still runs with no stream in it")
		}

		// A stream added later starts the wheel again; taking it out ends
		// the wheel's goroutine within a tick.
		again, againLog := newStream()
		time.Sleep(every)
		synctest.Wait()
		if at, _ := againLog.log(); len(at) != 1 {
			t.Errorf("%d pings in the first interval of a new stream, want 1", len(at))
		}
		again.stopPings()
		time.Sleep(2 * tick)
	})
}

// A write the socket cannot take at once keeps what it could not write,
// in order, and the waiting write sends the rest: the reader gets every
// byte once.
func TestEventWriterWriteNowKeepsTheRest(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	_ = server.(*net.TCPConn).SetWriteBuffer(32 << 10)
	_ = client.(*net.TCPConn).SetReadBuffer(32 << 10)

	w := &eventWriter{conn: server, raw: rawConnOf(server), timeout: 10 * time.Second, frames: &sync.Pool{}}
	if w.raw == nil {
		t.Skip("no raw connection on this platform")
	}
	data := make([]byte, 4<<20) // far more than both socket buffers hold
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	w.mu.Lock()
	w.hold(string(data), "", "", nil, "")
	all := w.writeNow()
	left := len(*w.pending)
	w.mu.Unlock()
	if all || left == 0 {
		t.Fatalf("writeNow wrote all %d bytes to a reader that reads nothing", len(data))
	}
	if runtime.GOOS == "linux" && left == len(data) {
		t.Fatal("writeNow wrote nothing to an empty socket")
	}

	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(client)
		got <- b
	}()
	if err := w.write(false, "", "", "", nil, ""); err != nil {
		t.Fatal(err)
	}
	server.Close()
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("the reader got %d bytes, want the %d written, in order", len(b), len(data))
	}
}
