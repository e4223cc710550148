package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kez-chat/kezd/internal/baseline"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// The benchmarks write durably (the harness's cluster runs with fsync on)
// 1 KiB envelopes, and compare the store's group-committed AppendMessage
// with raw pgx baselines on the same schema and the same seq logic (lock the
// recipient's counter row, bump it, insert), in the same run:
//
//	go test ./store/postgres -run '^$' -bench . -benchtime 3s -count 1
//
// rows/s is the number to compare; p50_us is the median latency of one
// append with a single sender.

const (
	benchSenders    = 16
	benchRecipients = 1000
)

var benchEnvelope = func() []byte {
	head, tail := `{"v":1,"ct":"`, `"}`
	return []byte(head + strings.Repeat("x", 1024-len(head)-len(tail)) + tail)
}()

// benchDB creates a migrated database with benchSenders senders and
// benchRecipients recipients, written in bulk so setup stays quick.
func benchDB(b *testing.B) string {
	b.Helper()
	url := pgtest.NewDatabase(b)
	db, err := postgres.Open(context.Background(), postgres.Config{URL: url}, nil)
	if err != nil {
		b.Fatal(err)
	}
	db.Close()
	pool := benchPool(b, url, 1)
	handles := make([]string, 0, benchRecipients+benchSenders)
	for i := range benchRecipients {
		handles = append(handles, fmt.Sprintf("r%d", i))
	}
	for i := range benchSenders {
		handles = append(handles, fmt.Sprintf("s%d", i))
	}
	if err := baseline.Seed(context.Background(), pool, handles); err != nil {
		b.Fatal(err)
	}
	pool.Close()
	return url
}

// runSenders runs b.N sends spread over n goroutines; send gets the sender
// index and a number unique in this run.
func runSenders(b *testing.B, n int, send func(sender int, i int64) error) {
	b.Helper()
	runWork(b, n, int64(b.N), send)
}

// runWork runs items 0..count-1 spread over n goroutines, then reports
// b.N rows per second.
func runWork(b *testing.B, n int, count int64, work func(sender int, i int64) error) {
	b.Helper()
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	b.ResetTimer()
	for s := range n {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= count {
					return
				}
				if err := work(s, i); err != nil {
					errs <- err
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
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rows/s")
}

func reportLatency(b *testing.B, lat []time.Duration) {
	b.Helper()
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50_us")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99_us")
}

func openBench(b *testing.B, url string, workers int) *postgres.DB {
	b.Helper()
	db, err := postgres.Open(context.Background(), postgres.Config{URL: url, CommitWorkers: workers}, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return db
}

func benchAppend(b *testing.B, workers int, recipient func(i int64) string) {
	db := openBench(b, benchDB(b), workers)
	ctx := context.Background()
	runSenders(b, benchSenders, func(s int, i int64) error {
		_, err := db.AppendMessage(ctx, store.NewMessage{
			From: fmt.Sprintf("s%d", s), To: recipient(i), ID: fmt.Sprint(i), Envelope: benchEnvelope,
		})
		return err
	})
}

// BenchmarkAppend: 16 concurrent senders to many recipients.
func BenchmarkAppend(b *testing.B) {
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			benchAppend(b, workers, func(i int64) string { return fmt.Sprintf("r%d", i%benchRecipients) })
		})
	}
}

// BenchmarkAppendHotRecipient: 16 concurrent senders to one recipient.
func BenchmarkAppendHotRecipient(b *testing.B) {
	for _, workers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			benchAppend(b, workers, func(int64) string { return "r0" })
		})
	}
}

// BenchmarkAppendSingleSender: one sender, one append at a time: the
// latency group commit must not hurt.
func BenchmarkAppendSingleSender(b *testing.B) {
	db := openBench(b, benchDB(b), 0)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	runSenders(b, 1, func(_ int, i int64) error {
		start := time.Now()
		_, err := db.AppendMessage(ctx, store.NewMessage{
			From: "s0", To: fmt.Sprintf("r%d", i%benchRecipients), ID: fmt.Sprint(i), Envelope: benchEnvelope,
		})
		lat = append(lat, time.Since(start))
		return err
	})
	reportLatency(b, lat)
}

func benchPool(b *testing.B, url string, conns int32) *pgxpool.Pool {
	b.Helper()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		b.Fatal(err)
	}
	cfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	return pool
}

func rowPerTx(ctx context.Context, pool *pgxpool.Pool, from, to, id string) error {
	return baseline.RowPerTx(ctx, pool, store.NewMessage{From: from, To: to, ID: id, Envelope: benchEnvelope})
}

// BenchmarkBaselineRowPerTx: baseline (a), raw pgx, one row per
// transaction, 16 connections.
func BenchmarkBaselineRowPerTx(b *testing.B) {
	pool := benchPool(b, benchDB(b), benchSenders)
	ctx := context.Background()
	runSenders(b, benchSenders, func(s int, i int64) error {
		return rowPerTx(ctx, pool, fmt.Sprintf("s%d", s), fmt.Sprintf("r%d", i%benchRecipients), fmt.Sprint(i))
	})
}

// BenchmarkBaselineRowPerTxSingleSender: the latency baseline for
// BenchmarkAppendSingleSender.
func BenchmarkBaselineRowPerTxSingleSender(b *testing.B) {
	pool := benchPool(b, benchDB(b), 1)
	ctx := context.Background()
	lat := make([]time.Duration, 0, b.N)
	runSenders(b, 1, func(_ int, i int64) error {
		start := time.Now()
		err := rowPerTx(ctx, pool, "s0", fmt.Sprintf("r%d", i%benchRecipients), fmt.Sprint(i))
		lat = append(lat, time.Since(start))
		return err
	})
	reportLatency(b, lat)
}

// BenchmarkBaselineBatch100: baseline (b), raw pgx, 100 rows per
// transaction: lock the counters in order, bump them, COPY the rows.
// conns=1 is one writer; conns=16 lets Postgres share fsyncs between
// writers as well.
func BenchmarkBaselineBatch100(b *testing.B) {
	for _, conns := range []int{1, 16} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			pool := benchPool(b, benchDB(b), int32(conns))
			ctx := context.Background()
			const size = 100
			batches := (int64(b.N) + size - 1) / size
			runWork(b, conns, batches, func(s int, k int64) error {
				first := k * size
				return batch100(ctx, pool, fmt.Sprintf("s%d", s), first, min(size, int64(b.N)-first))
			})
		})
	}
}

func batch100(ctx context.Context, pool *pgxpool.Pool, from string, first, n int64) error {
	ms := make([]store.NewMessage, n)
	for j := range n {
		ms[j] = store.NewMessage{From: from, To: fmt.Sprintf("r%d", (first+j)%benchRecipients), ID: fmt.Sprint(first + j), Envelope: benchEnvelope}
	}
	return baseline.Batch(ctx, pool, ms)
}
