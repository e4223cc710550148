package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// processRSS reads this process's resident set size.
func processRSS(b *testing.B) int64 {
	b.Helper()
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Skip("no /proc/self/status")
	}
	for line := range strings.SplitSeq(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	b.Skip("no VmRSS")
	return 0
}

// BenchmarkSlowStreamMemory is issue 10's attack, in one process: 24
// streams with since=0 on inboxes of 100 × 64 KiB envelopes (3 inboxes, 8
// streams each), each read slowly (8 KiB every 0.5 s, fast enough for every
// single write's deadline; a 64 KiB receive buffer) and, when the server ends it, reopened from its
// Last-Event-ID as a client would. It reports the server's RSS growth per
// stream, at its peak and at the end of 60 s, and how many ends the
// clients saw (late: what the kernel buffered before the server ended a
// stream drains first). The clients' own memory (an 8 KiB buffer each) is in the same
// process and negligible beside what is measured.
//
//	go test ./httpapi -run '^$' -bench SlowStreamMemory -benchtime 1x
func BenchmarkSlowStreamMemory(b *testing.B) {
	const (
		inboxes, perInbox, backlog = 3, 8, 100
		chunk, every               = 8 << 10, 500 * time.Millisecond
		duration                   = 60 * time.Second
	)
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(b.TempDir(), "kez.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	alice := newUser(b, "alice")
	owners := make([]user, inboxes)
	for i := range owners {
		owners[i] = newUser(b, fmt.Sprintf("bob%d", i))
	}
	for _, u := range append([]user{alice}, owners...) {
		if _, err := db.CreateHandle(ctx, store.Handle{Handle: u.handle, SigningKey: u.sk, EncryptionKey: u.ek}); err != nil {
			b.Fatal(err)
		}
	}
	envelope := []byte(`"` + strings.Repeat("x", protocol.MaxEnvelope-2) + `"`)
	for _, o := range owners {
		for i := range backlog {
			if _, err := db.AppendMessage(ctx, store.NewMessage{From: "alice", To: o.handle, ID: fmt.Sprint(o.handle, "-", i), Envelope: envelope}); err != nil {
				b.Fatal(err)
			}
		}
	}
	log := slog.New(slog.DiscardHandler)
	srv := New(Config{PublicURL: &url.URL{Scheme: "http", Host: "localhost"}}, chat.New(chat.Config{}, db, nil, nil, log), log)
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	b.Cleanup(srv.CloseStreams)

	runtime.GC()
	base := processRSS(b)
	var ended, received atomic.Int64
	deadline := time.Now().Add(duration)
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
	}}
	var wg sync.WaitGroup
	b.ResetTimer()
	for _, o := range owners {
		for range perInbox {
			wg.Go(func() {
				last := int64(0)
				for time.Now().Before(deadline) {
					conn, err := d.Dial("tcp", hs.Listener.Addr().String())
					if err != nil {
						b.Error(err)
						return
					}
					_ = conn.SetDeadline(deadline)
					fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nLast-Event-ID: %d\r\n\r\n", streamPath(o, o.handle, ""), last)
					r := bufio.NewReaderSize(&paced{r: conn, chunk: chunk, interval: every}, chunk)
					pending := int64(0)
					for {
						line, err := r.ReadString('\n')
						if err != nil {
							break
						}
						switch {
						case strings.HasPrefix(line, "id: "):
							pending, _ = strconv.ParseInt(strings.TrimSpace(line[4:]), 10, 64)
						case line == "\n" && pending > last:
							last = pending
							received.Add(1)
						}
					}
					conn.Close()
					if time.Until(deadline) > time.Second {
						ended.Add(1)
					}
				}
			})
		}
	}
	peak := int64(0)
	// Sampling starts once every stream is open.
	testwait.Within(b, time.Until(deadline), fmt.Sprintf("all %d streams to open", inboxes*perInbox), func() bool {
		return srv.OpenStreams() >= inboxes*perInbox
	})
	for time.Now().Before(deadline) {
		time.Sleep(time.Second) // sampling, not synchronisation
		if time.Until(deadline) < time.Second {
			break // the clients are about to close
		}
		peak = max(peak, processRSS(b)-base)
	}
	end := processRSS(b) - base // the streams still open
	wg.Wait()
	b.StopTimer()
	streams := float64(inboxes * perInbox)
	b.ReportMetric(float64(peak)/streams/(1<<20), "peak-MiB/stream")
	b.ReportMetric(float64(end)/streams/(1<<20), "end-MiB/stream")
	b.ReportMetric(float64(ended.Load()), "ends-seen-by-clients")
	b.ReportMetric(float64(received.Load()), "messages-read")
}

// paced reads exactly chunk bytes every interval (fewer only at the end):
// 16 KiB/s, so a 64 KiB frame takes 4 s, within any single write's
// 10 s deadline.
type paced struct {
	r        io.Reader
	chunk    int
	interval time.Duration
}

func (p *paced) Read(b []byte) (int, error) {
	time.Sleep(p.interval) // the client's pace, not synchronisation
	return io.ReadFull(p.r, b[:min(len(b), p.chunk)])
}
