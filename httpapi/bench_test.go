package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/baseline"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// The send benchmarks drive POST /v1/messages through the whole stack (HTTP,
// signature check, core, group-committed durable Postgres append) with 1 KiB
// envelopes, and run the raw pgx baselines on the same schema and the same
// Postgres cluster in the same binary, so that the ratios are of one run:
//
//	go test ./httpapi -run '^$' -bench . -benchtime 3s -count 1
//
// Send* report msgs/s; Baseline* rows/s: (a) is BaselineRowPerTx, (b)
// BaselineBatch100. SendSingleSender's p50_us compares with
// BaselineRowPerTxSingleSender's.
//
// The server's capacity is what is measured, so the client does up front
// what a client does anyway: each request is built and signed before the
// timer starts, and goes out on its own keep-alive connection as one write.

const (
	benchSenders    = 16
	benchRecipients = 64
)

var benchEnvelope = func() string {
	head, tail := `{"v":1,"ct":"`, `"}`
	return head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail
}()

func benchRecipient(i int64) string { return fmt.Sprintf("r%d", i%benchRecipients) }

// benchDatabase creates a migrated database with benchRecipients
// recipients (r0, r1, …), and returns its URL and a pool on it.
func benchDatabase(b *testing.B, conns int32) (string, *pgxpool.Pool) {
	b.Helper()
	ctx := context.Background()
	dbURL := pgtest.NewDatabase(b)
	db, err := postgres.Open(ctx, postgres.Config{URL: dbURL}, nil)
	if err != nil {
		b.Fatal(err)
	}
	db.Close()
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	recipients := make([]string, benchRecipients)
	for i := range recipients {
		recipients[i] = benchRecipient(int64(i))
	}
	if err := baseline.Seed(ctx, pool, recipients); err != nil {
		b.Fatal(err)
	}
	return dbURL, pool
}

// benchServer starts the API on a fresh database with senders users that
// can sign, and returns its address.
// benchOptions turn on what the send path may check besides the send: the
// rate limits, the inbox quota.
type benchOptions struct {
	limits bool
	quota  store.Quota
}

func benchServer(b *testing.B, senders int, opts ...benchOptions) (string, []user) {
	b.Helper()
	ctx := context.Background()
	dbURL, _ := benchDatabase(b, 1)
	db, err := postgres.Open(ctx, postgres.Config{URL: dbURL}, nil)
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
	log := slog.New(slog.DiscardHandler)
	br := brokertest.Start(b, broker.Config{}, log)
	var limits *ratelimit.Limiter
	var opt benchOptions
	if len(opts) > 0 {
		opt = opts[0]
	}
	if opt.limits {
		limits = benchLimits(db)
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { limits.Run(lctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
	}
	svc := chat.New(chat.Config{Limits: limits, Quota: opt.quota}, db, br, br, log)
	outboxCtx, stopOutbox := context.WithCancel(ctx)
	outboxDone := make(chan struct{})
	go func() { defer close(outboxDone); svc.RunOutbox(outboxCtx) }()
	b.Cleanup(func() { stopOutbox(); <-outboxDone })
	srv := New(Config{PublicURL: &url.URL{Scheme: "http", Host: "localhost"}, Limits: limits}, svc, log)
	hs := httptest.NewServer(srv.Handler())
	b.Cleanup(hs.Close)
	return hs.Listener.Addr().String(), users
}

// signedSend is a whole POST /v1/messages request, signed, as it goes on
// the wire.
func signedSend(u user, to, id string, ts int64) []byte {
	body := sendBody(to, id, benchEnvelope)
	auth := u.authHeader(identity.SendString(identity.BodySHA256(body), ts), ts)
	head := fmt.Sprintf("POST /v1/messages HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", auth, len(body))
	return append([]byte(head), body...)
}

// benchSend sends b.N messages from senders concurrent senders, each on its
// own keep-alive connection, waiting for each reply before the next send.
func benchSend(b *testing.B, senders int, recipient func(i int64) string, opts ...benchOptions) {
	addr, users := benchServer(b, senders, opts...)
	ts := time.Now().Unix()
	reqs := make([][]byte, b.N)
	for i := range reqs {
		reqs[i] = signedSend(users[i%senders], recipient(int64(i)), fmt.Sprint("m", i), ts)
	}
	conns := make([]net.Conn, senders)
	for s := range conns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		conns[s] = c
	}
	// Sender s sends requests s, s+senders, s+2*senders, …: those signed by
	// its user.
	lat := runSenders(b, senders, func(s int) func(i int) error {
		r := bufio.NewReader(conns[s])
		return func(i int) error {
			if _, err := conns[s].Write(reqs[i]); err != nil {
				return err
			}
			res, err := http.ReadResponse(r, nil)
			if err != nil {
				return err
			}
			_, err = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err != nil {
				return err
			}
			if res.StatusCode != http.StatusCreated {
				return fmt.Errorf("send: status %d", res.StatusCode)
			}
			return nil
		}
	})
	report(b, "msgs/s", lat)
}

// runSenders runs b.N operations on n goroutines, goroutine s doing those
// with index ≡ s mod n, and returns their latencies.
func runSenders(b *testing.B, n int, sender func(s int) func(i int) error) []time.Duration {
	b.Helper()
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		lat = make([]time.Duration, 0, b.N)
	)
	errs := make(chan error, n)
	do := make([]func(int) error, n)
	for s := range n {
		do[s] = sender(s)
	}
	b.ResetTimer()
	for s := range n {
		wg.Go(func() {
			mine := make([]time.Duration, 0, b.N/n+1)
			defer func() {
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
			for i := s; i < b.N; i += n {
				start := time.Now()
				if err := do[s](i); err != nil {
					errs <- err
					return
				}
				mine = append(mine, time.Since(start))
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return lat
}

func report(b *testing.B, unit string, lat []time.Duration) {
	b.Helper()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), unit)
	slices.Sort(lat)
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
	}
}

// BenchmarkSend: 16 concurrent senders to many recipients.
func BenchmarkSend(b *testing.B) {
	benchSend(b, benchSenders, benchRecipient)
}

// benchLimits are the default limits, buckets shared in Postgres, with
// their default sizes (so the default lease sizes: a send takes its
// tokens from the store once per lease) but refilling within a
// millisecond, so that the benchmark measures what checking the limits
// costs, not refusals.
func benchLimits(db *postgres.DB) *ratelimit.Limiter {
	limits := map[ratelimit.Name]ratelimit.Limit{}
	for n, l := range ratelimit.Defaults {
		limits[n] = ratelimit.Limit{Burst: l.Burst, Per: time.Millisecond}
	}
	return ratelimit.New(ratelimit.Config{Limits: limits, Shared: db})
}

// BenchmarkSendLimits: BenchmarkSend with the rate limits off and on, in
// one run, for their cost.
func BenchmarkSendLimits(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchSend(b, benchSenders, benchRecipient, benchOptions{}) })
	b.Run("on", func(b *testing.B) { benchSend(b, benchSenders, benchRecipient, benchOptions{limits: true}) })
}

// BenchmarkSendQuota is BenchmarkSend without and with kezd's default inbox
// quota (the usage counts are kept either way; "on" adds the check).
func BenchmarkSendQuota(b *testing.B) {
	b.Run("off", func(b *testing.B) { benchSend(b, benchSenders, benchRecipient, benchOptions{}) })
	b.Run("on", func(b *testing.B) {
		benchSend(b, benchSenders, benchRecipient, benchOptions{quota: store.Quota{Messages: 100_000, Bytes: 512 << 20}})
	})
}

// BenchmarkSendHotRecipient: 16 concurrent senders to one recipient.
func BenchmarkSendHotRecipient(b *testing.B) {
	benchSend(b, benchSenders, func(int64) string { return "r0" })
}

// BenchmarkSendSingleSender: one sender, for latency at low load.
func BenchmarkSendSingleSender(b *testing.B) {
	benchSend(b, 1, benchRecipient)
}

func benchRowPerTx(b *testing.B, senders int) {
	_, pool := benchDatabase(b, int32(senders))
	ctx := context.Background()
	lat := runSenders(b, senders, func(s int) func(i int) error {
		return func(i int) error {
			return baseline.RowPerTx(ctx, pool, store.NewMessage{
				From: fmt.Sprint("s", s), To: benchRecipient(int64(i)), ID: fmt.Sprint(i), Envelope: []byte(benchEnvelope),
			})
		}
	})
	report(b, "rows/s", lat)
}

// BenchmarkBaselineRowPerTx: baseline (a), raw pgx, one row per
// transaction, 16 connections.
func BenchmarkBaselineRowPerTx(b *testing.B) { benchRowPerTx(b, benchSenders) }

// BenchmarkBaselineRowPerTxSingleSender: the latency baseline for
// BenchmarkSendSingleSender.
func BenchmarkBaselineRowPerTxSingleSender(b *testing.B) { benchRowPerTx(b, 1) }

// BenchmarkBaselineBatch100: baseline (b), raw pgx, 100 rows per
// transaction (counters locked in order, rows by COPY), one connection.
func BenchmarkBaselineBatch100(b *testing.B) {
	_, pool := benchDatabase(b, 1)
	ctx := context.Background()
	const size = 100
	batches := (b.N + size - 1) / size
	b.ResetTimer()
	for k := range batches {
		ms := make([]store.NewMessage, 0, size)
		for i := k * size; i < min((k+1)*size, b.N); i++ {
			ms = append(ms, store.NewMessage{From: "s0", To: benchRecipient(int64(i)), ID: fmt.Sprint(i), Envelope: []byte(benchEnvelope)})
		}
		if err := baseline.Batch(ctx, pool, ms); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	report(b, "rows/s", nil)
}
