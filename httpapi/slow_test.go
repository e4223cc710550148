package httpapi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// slowDialer dials with a small receive buffer, so that what the server
// writes waits in its own buffers, not in the client's kernel.
var slowDialer = net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 8192) })
	return errors.Join(err, serr)
}}

// throttled reads at most chunk bytes every interval: a reader fast
// enough for every single write's deadline, too slow to drain a backlog.
type throttled struct {
	r        io.Reader
	chunk    int
	interval time.Duration
}

func (t *throttled) Read(p []byte) (int, error) {
	time.Sleep(t.interval) // the client's pace, not synchronisation
	return t.r.Read(p[:min(len(p), t.chunk)])
}

// readSeqs reads an SSE body until it ends or ready comes, and returns the
// seqs of the messages received whole (as an EventSource would count them
// for Last-Event-ID) and whether ready came.
func readSeqs(t *testing.T, r io.Reader) (seqs []int64, ready bool) {
	t.Helper()
	br := bufio.NewReaderSize(r, 1<<17)
	pending := int64(0)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return seqs, false
		}
		switch {
		case strings.HasPrefix(line, "id: "):
			n, err := strconv.ParseInt(strings.TrimSpace(line[4:]), 10, 64)
			if err != nil {
				t.Errorf("id line %q", line)
				return seqs, false
			}
			pending = n
		case line == "\n" && pending != 0:
			seqs, pending = append(seqs, pending), 0
		case strings.HasPrefix(line, "event: ready"):
			return seqs, true
		}
	}
}

// Defect 1 of issue 10: a reader that takes each write within its
// deadline but drains a backlog of 64 KiB envelopes at 16 KiB/s kept its
// stream (and 100 messages of store page) for as long as it liked. Now the
// stream ends when a catch-up page is not written within DrainTimeout, and
// the client, resuming from its Last-Event-ID, loses nothing.
func TestStreamSlowDrainEnds(t *testing.T) {
	st := openSQLite(t)
	e := newEnvWithCore(t, st, nil, chat.Config{DrainTimeout: 500 * time.Millisecond})
	_, bob := e.aliceAndBob() // alice sends, through the store
	envelope := []byte(`"` + strings.Repeat("x", protocol.MaxEnvelope-2) + `"`)
	const total = 100
	for i := range total {
		if _, err := st.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: fmt.Sprint("m", i), Envelope: envelope}); err != nil {
			t.Fatal(err)
		}
	}

	conn, err := slowDialer.DialContext(t.Context(), "tcp", e.hs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", streamPath(bob, "bob", "since=0"))
	type result struct {
		seqs  []int64
		ready bool
	}
	// Draining all of it at this pace takes about 25 s.
	body := bufio.NewReaderSize(&throttled{r: conn, chunk: 16 << 10, interval: 60 * time.Millisecond}, 16<<10)
	// The status line means the stream is open.
	if status, err := body.ReadString('\n'); err != nil || !strings.HasPrefix(status, "HTTP/1.1 200") {
		t.Fatalf("status line %q, err %v", status, err)
	}
	read := make(chan result, 1)
	go func() {
		seqs, ready := readSeqs(t, body)
		read <- result{seqs, ready}
	}()
	// A stream that is never ended stays open once it has sent everything:
	// waiting longer than the drain would take cannot pass by accident.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := e.srv.WaitStreams(ctx); err != nil {
		t.Fatalf("the slow reader's stream was not ended: %v", err)
	}
	if n := e.srv.SlowStreams(); n != 1 {
		t.Errorf("SlowStreams = %d, want 1", n)
	}
	// What the server wrote before the end is still in flight: the reader
	// takes it at its pace, to the end of the connection (bounded).
	var r result
	select {
	case r = <-read:
	case <-time.After(10 * time.Second):
		conn.Close()
		r = <-read
	}
	conn.Close()
	switch {
	case r.ready:
		t.Fatalf("the slow reader drained all %d messages: its stream was never ended", len(r.seqs))
	case len(r.seqs) == 0:
		t.Fatal("the stream ended before any message")
	}
	got := r.seqs
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("message %d has seq %d", i, seq)
		}
	}

	// The client resumes where it was and gets the rest, each once. A
	// reader at full speed is held to the same drain deadline, which a
	// loaded machine can miss too: then it resumes again, as any client
	// does when the server ends its stream.
	for resumes := 0; ; resumes++ {
		if resumes == 20 {
			t.Fatalf("after %d resumes the stream still had not sent all %d messages (got %d)", resumes, total, len(got))
		}
		h := http.Header{"Last-Event-ID": {strconv.FormatInt(got[len(got)-1], 10)}}
		s := e.openStream(streamPath(bob, "bob", ""), h)
		if s.res.StatusCode != http.StatusOK {
			t.Fatalf("resume: status %d", s.res.StatusCode)
		}
		seqs, ready := readSeqs(t, s.r)
		s.res.Body.Close()
		got = append(got, seqs...)
		if ready {
			break
		}
	}
	for i, seq := range got {
		if seq != int64(i+1) {
			t.Fatalf("after resuming, message %d has seq %d", i, seq)
		}
	}
	if len(got) != total {
		t.Fatalf("got %d messages across the resumes, want %d", len(got), total)
	}
}
