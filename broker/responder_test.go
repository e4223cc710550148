package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestResponderQueueGroup: two responders in one queue group (two kezd
// instances) answer every request exactly once between them, and Stop lets
// a request being handled finish with its answer.
func TestResponderQueueGroup(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{})
	var handled [2]atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	var rs [2]*Responder
	for i := range rs {
		r, err := Respond(t.Context(), b.Conn(), "svc.echo", "svc", 2, func(ctx context.Context, m *nats.Msg) {
			handled[i].Add(1)
			if string(m.Data) == "slow" {
				close(entered)
				<-release
			}
			m.Respond(append([]byte("ok "), m.Data...))
		})
		if err != nil {
			t.Fatal(err)
		}
		rs[i] = r
	}
	const n = 50
	for i := range n {
		reply, err := b.Conn().Request("svc.echo", fmt.Appendf(nil, "%d", i), 10*time.Second)
		if err != nil || string(reply.Data) != fmt.Sprintf("ok %d", i) {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	if got := handled[0].Load() + handled[1].Load(); got != n {
		t.Fatalf("%d requests handled %d times", n, got)
	}

	// One instance stops while handling a request: the answer still comes.
	rs[1].Stop()
	answered := make(chan *nats.Msg, 1)
	go func() {
		reply, err := b.Conn().Request("svc.echo", []byte("slow"), 10*time.Second)
		if err == nil {
			answered <- reply
		}
		close(answered)
	}()
	<-entered
	stopped := make(chan struct{})
	go func() { rs[0].Stop(); close(stopped) }()
	select {
	case <-stopped:
		t.Fatal("Stop returned while a request was being handled")
	default:
	}
	close(release)
	<-stopped
	if reply := <-answered; reply == nil || string(reply.Data) != "ok slow" {
		t.Fatalf("the request in flight at Stop got %v", reply)
	}
}

// TestResponderOutlivesStartContext: the context a responder was started
// with ending (kezd's signal context, at SIGTERM) does not stop it: it
// answers, with a live handler context, until Stop.
func TestResponderOutlivesStartContext(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	r, err := Respond(ctx, b.Conn(), "svc.alive", "svc", 1, func(hctx context.Context, m *nats.Msg) {
		if hctx.Err() != nil {
			m.Respond([]byte("cancelled"))
			return
		}
		m.Respond([]byte("ok"))
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	cancel()
	for range 20 {
		reply, err := b.Conn().Request("svc.alive", nil, 10*time.Second)
		if err != nil || string(reply.Data) != "ok" {
			t.Fatalf("after the start context ended: %v %v", err, reply)
		}
	}
}
