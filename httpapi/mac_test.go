package httpapi

import (
	"crypto/rand"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
)

// A live message someone else publishes on an inbox subject (an external
// NATS with loose permissions; here an open embedded server anyone on
// loopback may publish to) is not shown on the stream, and does not make
// the real message of its seq be dropped as already seen.
func TestForgedLiveMessageIsDropped(t *testing.T) {
	key := make([]byte, 32)
	rand.Read(key)
	b := brokertest.Start(t, broker.Config{Listen: "127.0.0.1:-1", MACKey: key}, testLog(t))
	e := newEnvWithBroker(t, openSQLite(t), b)
	alice, bob := e.aliceAndBob()

	before := b.Server().NumSubscriptions()
	s := e.openStream(streamPath(bob, "bob", "since=0"), nil)
	s.wantReady(0)
	waitSubscribed(t, b, before, 1)

	rogue, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	forged := store1("bob", 1, "alice", `{"forged":true}`)
	for _, mac := range []string{"", "bm90IGEgbWFj"} { // none, and a wrong one
		msg := &nats.Msg{Subject: protocol.InboxSubject("bob"), Data: forged,
			Header: nats.Header{protocol.SeqHeader: {strconv.Itoa(1)}}}
		if mac != "" {
			msg.Header.Set(protocol.MACHeader, mac)
		}
		if err := rogue.PublishMsg(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := rogue.Flush(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "both forged messages to be rejected", func() bool { return b.LiveRejected() >= 2 })

	e.mustSend(alice, "bob", "m1", `{"real":true}`)
	if m := s.wantMessage(1); string(m.Envelope) != `{"real":true}` {
		t.Fatalf("stream shows %s as message 1, want the real one", m.Envelope)
	}
}

// store1 is the stored message JSON of a message, as kezd publishes it.
func store1(to string, seq int64, from, envelope string) []byte {
	return []byte(`{"seq":` + strconv.FormatInt(seq, 10) + `,"from":"` + from + `","to":"` + to + `","id":"x1","envelope":` + envelope + `,"sent_at":"2026-12-01T00:00:00Z"}`)
}
