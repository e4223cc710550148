package httpapi

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/internal/testwait"
)

// startBroker runs an embedded NATS for live delivery.
func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	return brokertest.Start(t, broker.Config{}, testLog(t))
}

// waitSubscribed waits until the embedded server holds at least n more
// subscriptions than before, i.e. a stream or long-poll is listening.
func waitSubscribed(t *testing.T, b *broker.Broker, before uint32, n uint32) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("%d more subscriptions on the embedded server", n), func() bool {
		return b.Server().NumSubscriptions() >= before+n
	})
}

func TestStreamBacklogReadyLive(t *testing.T) {
	forEachBackend(t, func(t *testing.T, open func(*testing.T) testStore) {
		b := startBroker(t)
		e := newEnvWithBroker(t, open(t), b)
		alice, bob := e.aliceAndBob()
		e.mustSend(alice, "bob", "m1", `{"n":1}`)
		e.mustSend(alice, "bob", "m2", `{"n":2}`)

		s := e.openStream(streamPath(bob, "bob", "since=0"), nil)
		if s.res.StatusCode != http.StatusOK {
			t.Fatalf("stream: %s", s.res.Status)
		}
		s.wantMessage(1)
		s.wantMessage(2)
		s.wantReady(2)
		// Live: sent after ready, delivered by the broker (the safety-net
		// store read is a second away, the broker milliseconds).
		for i, id := range []string{"m3", "m4", "m5"} {
			e.mustSend(alice, "bob", id, `{"html":"<&>"}`)
			m := s.wantMessage(int64(3 + i))
			if string(m.Envelope) != `{"html":"<&>"}` {
				t.Fatalf("envelope came back as %s", m.Envelope)
			}
		}
	})
}

func TestLongPollWakesOnMessage(t *testing.T) {
	b := startBroker(t)
	e := newEnvWithBroker(t, openSQLite(t), b)
	alice, bob := e.aliceAndBob()

	before := b.Server().NumSubscriptions()
	done := make(chan response, 1)
	started := time.Now()
	go func() { done <- e.poll(bob, "bob", "since=0&wait=30", 0) }()
	waitSubscribed(t, b, before, 1)
	e.mustSend(alice, "bob", "wake", `"up"`)

	r := <-done
	r.want(t, http.StatusOK)
	var got pollResult
	r.decode(t, &got)
	if len(got.Messages) != 1 || got.Messages[0].ID != "wake" || *got.Next != 1 {
		t.Fatalf("long-poll returned %s", r.body)
	}
	// It woke on the message, well before its 30 s wait ran out.
	if waited := time.Since(started); waited >= 30*time.Second {
		t.Fatalf("long-poll returned after %s: it did not wake", waited)
	}
}
