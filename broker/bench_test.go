package broker

import (
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/kez-chat/kezd/protocol"
	"github.com/nats-io/nats.go"
)

// The numbers behind live.go's architecture: what a stream costs to open and
// close, to keep idle, and to deliver to, with one NATS subscription per
// stream (the baseline, "per-stream") against the hub's one per handle.
//
//	go test -run '^$' -bench . -benchmem ./broker/

func BenchmarkSubscribeChurn(b *testing.B) {
	br := startBroker(b, Config{})
	nc := br.Conn()
	nop := func(protocol.Encoded) {}

	b.Run("per-stream", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sub, err := nc.Subscribe(protocol.InboxSubject(fmt.Sprintf("h%d", i)), func(*nats.Msg) {})
			if err != nil {
				b.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				b.Fatal(err)
			}
			sub.Unsubscribe()
		}
	})
	b.Run("hub-new-handle", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			cancel, err := br.Subscribe(b.Context(), fmt.Sprintf("n%d", i), nop, func() {})
			if err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})
	b.Run("hub-shared-handle", func(b *testing.B) {
		keep, err := br.Subscribe(b.Context(), "shared", nop, func() {})
		if err != nil {
			b.Fatal(err)
		}
		defer keep()
		for b.Loop() {
			cancel, err := br.Subscribe(b.Context(), "shared", nop, func() {})
			if err != nil {
				b.Fatal(err)
			}
			cancel()
		}
	})
}

// BenchmarkIdleStreams reports the memory each idle stream holds (heap and
// goroutine stacks) with 10,000 streams on distinct handles.
func BenchmarkIdleStreams(b *testing.B) {
	const n = 10000
	measure := func(b *testing.B, open func(i int) func()) {
		for b.Loop() {
			before := memInUse()
			closers := make([]func(), n)
			for i := range closers {
				closers[i] = open(i)
			}
			after := memInUse()
			b.ReportMetric(float64(after-before)/n, "B/stream")
			for _, c := range closers {
				c()
			}
		}
	}
	br := startBroker(b, Config{})
	nc := br.Conn()
	b.Run("per-stream", func(b *testing.B) {
		measure(b, func(i int) func() {
			sub, err := nc.Subscribe(protocol.InboxSubject(fmt.Sprintf("i%d", i)), func(*nats.Msg) {})
			if err != nil {
				b.Fatal(err)
			}
			return func() { sub.Unsubscribe() }
		})
	})
	b.Run("hub", func(b *testing.B) {
		measure(b, func(i int) func() {
			cancel, err := br.Subscribe(b.Context(), fmt.Sprintf("j%d", i), func(protocol.Encoded) {}, func() {})
			if err != nil {
				b.Fatal(err)
			}
			return cancel
		})
	})
}

func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc + m.StackInuse
}

// BenchmarkFanout delivers one message to N streams of one handle.
func BenchmarkFanout(b *testing.B) {
	br := startBroker(b, Config{})
	nc := br.Conn()
	msg := testMessage("fan", 1, `{"ciphertext":"`+string(make([]byte, 0))+`0123456789abcdef"}`)
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("per-stream/%d", n), func(b *testing.B) {
			var got atomic.Int64
			done := make(chan struct{}, 1)
			for range n {
				sub, err := nc.Subscribe(protocol.InboxSubject("fan"), func(m *nats.Msg) {
					if _, err := decodeMessage("fan", m); err != nil {
						b.Error(err)
					}
					if got.Add(1)%int64(n) == 0 {
						done <- struct{}{}
					}
				})
				if err != nil {
					b.Fatal(err)
				}
				defer sub.Unsubscribe()
			}
			nc.Flush()
			for b.Loop() {
				if err := br.Publish(b.Context(), msg); err != nil {
					b.Fatal(err)
				}
				<-done
			}
		})
		b.Run(fmt.Sprintf("hub/%d", n), func(b *testing.B) {
			var got atomic.Int64
			done := make(chan struct{}, 1)
			for range n {
				cancel, err := br.Subscribe(b.Context(), "fan", func(protocol.Encoded) {
					if got.Add(1)%int64(n) == 0 {
						done <- struct{}{}
					}
				}, func() {})
				if err != nil {
					b.Fatal(err)
				}
				defer cancel()
			}
			for b.Loop() {
				if err := br.Publish(b.Context(), msg); err != nil {
					b.Fatal(err)
				}
				<-done
			}
		})
	}
}
