package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// The send benchmarks drive POST /v1/messages through the whole stack (HTTP,
// signature check, core, group-committed durable Postgres append) with 1 KiB
// envelopes. Compare msgs/s with the raw pgx baselines of store/postgres in
// the same run (go tool task bench runs both).

const benchRecipients = 64

var benchEnvelope = func() string {
	head, tail := `{"v":1,"ct":"`, `"}`
	return head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail
}()

// benchServer starts the API on a fresh Postgres database with senders
// users that can sign, and benchRecipients recipients.
func benchServer(b *testing.B, senders int) (string, []user) {
	b.Helper()
	ctx := context.Background()
	db, err := postgres.Open(ctx, postgres.Config{URL: pgtest.NewDatabase(b)}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	users := make([]user, senders)
	for i := range users {
		users[i] = newUser(b, fmt.Sprintf("s%d", i))
		if _, err := db.CreateHandle(ctx, store.Handle{Handle: users[i].handle, SigningKey: users[i].sk, EncryptionKey: users[i].ek}); err != nil {
			b.Fatal(err)
		}
	}
	for i := range benchRecipients {
		u := newUser(b, fmt.Sprintf("r%d", i))
		if _, err := db.CreateHandle(ctx, store.Handle{Handle: u.handle, SigningKey: u.sk, EncryptionKey: u.ek}); err != nil {
			b.Fatal(err)
		}
	}
	log := slog.New(slog.DiscardHandler)
	svc := chat.New(chat.Config{}, db, nil, nil, log)
	srv := New(Config{PublicURL: &url.URL{Scheme: "http", Host: "localhost"}}, svc, log)
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	return hs.URL, users
}

func benchSend(b *testing.B, senders int, recipient func(i int64) string) {
	base, users := benchServer(b, senders)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: senders}}
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		lat  []time.Duration
	)
	errs := make(chan error, senders)
	b.ResetTimer()
	for s := range senders {
		wg.Go(func() {
			u := users[s]
			var mine []time.Duration
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			for {
				i := next.Add(1) - 1
				if i >= int64(b.N) {
					return
				}
				body := sendBody(recipient(i), fmt.Sprint("m", i), benchEnvelope)
				ts := time.Now().Unix()
				req, _ := http.NewRequest(http.MethodPost, base+"/v1/messages", bytes.NewReader(body))
				req.Header.Set("Authorization", u.authHeader(identity.SendString(chat.BodySHA256(body), ts), ts))
				req.Header.Set("Content-Type", "application/json")
				start := time.Now()
				res, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				mine = append(mine, time.Since(start))
				if res.StatusCode != http.StatusCreated {
					errs <- fmt.Errorf("send: status %d", res.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
	}
}

// BenchmarkSend: 16 concurrent senders to many recipients.
func BenchmarkSend(b *testing.B) {
	benchSend(b, 16, func(i int64) string { return fmt.Sprintf("r%d", i%benchRecipients) })
}

// BenchmarkSendHotRecipient: 16 concurrent senders to one recipient.
func BenchmarkSendHotRecipient(b *testing.B) {
	benchSend(b, 16, func(int64) string { return "r0" })
}

// BenchmarkSendSingleSender: one sender, for latency at low load.
func BenchmarkSendSingleSender(b *testing.B) {
	benchSend(b, 1, func(i int64) string { return fmt.Sprintf("r%d", i%benchRecipients) })
}
