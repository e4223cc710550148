package broker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/nats-io/nats.go"
)

func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// startBroker starts a broker and closes it when the test ends.
func startBroker(t testing.TB, cfg Config) *Broker {
	t.Helper()
	return startBrokerLog(t, cfg, testLogger(t))
}

// startBrokerLog starts a broker logging to log and closes it when the test
// ends (package brokertest's Start, which this package cannot import).
func startBrokerLog(t testing.TB, cfg Config, log *slog.Logger) *Broker {
	t.Helper()
	b, err := Start(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return b
}

// connect opens a plain client connection to url.
func connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// recv waits for a value or fails after a generous bound.
func recv[T any](t testing.TB, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting")
		var zero T
		return zero
	}
}

func testMessage(to string, seq int64, envelope string) store.Message {
	return store.Message{
		Seq: seq, From: "alice", To: to, ID: "m" + string(rune('a'+seq%26)),
		Envelope: json.RawMessage(envelope),
		SentAt:   time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	}
}

func TestPublishWireFormat(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{Listen: "127.0.0.1:-1"})
	nc := connect(t, b.ClientURL())
	sub, err := nc.SubscribeSync(protocol.InboxSubject("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	// Key order, escapes, number spelling and <>& must survive byte for byte.
	envelope := `{"z":1,"a":"<b>&amp;</b>","u":"\u00e9\u2028","n":1.50e+3,"s":"\"q\""}`
	if err := b.Publish(t.Context(), testMessage("bob", 42, envelope)); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":42,"from":"alice","to":"bob","id":"mq","envelope":` + envelope + `,"sent_at":"2025-01-02T03:04:05Z"}`
	if string(msg.Data) != want {
		t.Errorf("data\n got %s\nwant %s", msg.Data, want)
	}
	if got := msg.Header.Get("Kez-Seq"); got != "42" {
		t.Errorf("Kez-Seq = %q, want 42", got)
	}
}

func TestPublishRejectsBadRecipient(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{})
	for _, to := range []string{"", "a.b", "*", ">", "Bob"} {
		if err := b.Publish(t.Context(), testMessage(to, 1, `{}`)); err == nil {
			t.Errorf("Publish to %q succeeded", to)
		}
	}
}

// listenerRec records what a hub listener is told.
type listenerRec struct {
	msgs   chan protocol.Encoded
	resync chan struct{}
}

func newListener() *listenerRec {
	return &listenerRec{msgs: make(chan protocol.Encoded, 100), resync: make(chan struct{}, 100)}
}

func (l *listenerRec) subscribe(t testing.TB, b *Broker, handle string) func() {
	t.Helper()
	cancel, err := b.Subscribe(t.Context(), handle,
		func(m protocol.Encoded) { l.msgs <- m },
		func() { l.resync <- struct{}{} })
	if err != nil {
		t.Fatalf("subscribe %s: %v", handle, err)
	}
	t.Cleanup(cancel)
	return cancel
}

func TestSubscribeFansOutPerHandle(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{}) // no listener: all in-process
	a1, a2, bob := newListener(), newListener(), newListener()
	cancelA1 := a1.subscribe(t, b, "alice")
	a2.subscribe(t, b, "alice")
	bob.subscribe(t, b, "bob")

	if err := b.Publish(t.Context(), testMessage("alice", 1, `{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), testMessage("bob", 7, `{"x":2}`)); err != nil {
		t.Fatal(err)
	}
	for _, l := range []*listenerRec{a1, a2} {
		if m := recv(t, l.msgs); m.Seq != 1 || !bytes.Contains(m.JSON, []byte(`"to":"alice"`)) {
			t.Errorf("alice listener got %d %s", m.Seq, m.JSON)
		}
	}
	if m := recv(t, bob.msgs); m.Seq != 7 {
		t.Errorf("bob listener got %+v", m)
	}

	cancelA1()
	cancelA1() // idempotent
	if err := b.Publish(t.Context(), testMessage("alice", 2, `{}`)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, a2.msgs); m.Seq != 2 {
		t.Errorf("remaining alice listener got %+v", m)
	}
	// bob's later message proves the dispatcher moved past seq 2.
	if err := b.Publish(t.Context(), testMessage("bob", 8, `{}`)); err != nil {
		t.Fatal(err)
	}
	recv(t, bob.msgs)
	select {
	case m := <-a1.msgs:
		t.Errorf("cancelled listener got %+v", m)
	default:
	}
	if n := b.hub.subscriptions(); n != 2 {
		t.Errorf("%d NATS subscriptions, want 2 (alice, bob)", n)
	}
}

func TestLastListenerUnsubscribes(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{})
	l := newListener()
	cancel := l.subscribe(t, b, "alice")
	cancel()
	if n := b.hub.subscriptions(); n != 0 {
		t.Errorf("%d subscriptions after the last cancel", n)
	}
	if n := b.Conn().NumSubscriptions(); n != 0 {
		t.Errorf("connection still has %d subscriptions", n)
	}
}

func TestMalformedInboxMessagesAreDropped(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{Listen: "127.0.0.1:-1"})
	l := newListener()
	l.subscribe(t, b, "alice")
	nc := connect(t, b.ClientURL())
	good, _ := protocol.Marshal(testMessage("alice", 3, `{}`))
	bad := []*nats.Msg{
		{Data: []byte("not json")},
		{Data: good}, // no header
		{Data: good, Header: nats.Header{protocol.SeqHeader: {"4"}}},
		{Data: mustEncode(t, testMessage("bob", 3, `{}`)), Header: nats.Header{protocol.SeqHeader: {"3"}}},
		{Data: mustEncode(t, testMessage("alice", 0, `{}`)), Header: nats.Header{protocol.SeqHeader: {"0"}}},
		{Data: good, Header: nats.Header{protocol.SeqHeader: {"03"}}},
		{Data: good[:len(good)-1], Header: nats.Header{protocol.SeqHeader: {"3"}}},
		{Data: []byte(`{"to":"alice","seq":3,"from":"bob","id":"x","envelope":{}}`), Header: nats.Header{protocol.SeqHeader: {"3"}}}, // not kezd's layout
	}
	for _, m := range bad {
		m.Subject = protocol.InboxSubject("alice")
		if err := nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.PublishMsg(&nats.Msg{Subject: protocol.InboxSubject("alice"), Data: good, Header: nats.Header{protocol.SeqHeader: {"3"}}}); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, l.msgs); m.Seq != 3 {
		t.Errorf("got %+v, want only the well-formed seq 3", m)
	}
}

func mustEncode(t testing.TB, m store.Message) []byte {
	t.Helper()
	b, err := protocol.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReconnectResyncsListeners(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{})
	l1, l2 := newListener(), newListener()
	l1.subscribe(t, b, "alice")
	l2.subscribe(t, b, "bob")
	cid, err := b.Conn().GetClientID()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Server().DisconnectClientByID(cid); err != nil {
		t.Fatal(err)
	}
	recv(t, l1.resync)
	recv(t, l2.resync)
	// After the reconnect the subscriptions are back.
	if err := b.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), testMessage("alice", 9, `{}`)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, l1.msgs); m.Seq != 9 {
		t.Errorf("after reconnect got %+v", m)
	}
}

func TestSubscribeConcurrentlyOneSubscription(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{})
	const n = 20
	ls := make([]*listenerRec, n)
	var wg sync.WaitGroup
	for i := range ls {
		ls[i] = newListener()
		wg.Go(func() { ls[i].subscribe(t, b, "alice") })
	}
	wg.Wait()
	if got := b.Conn().NumSubscriptions(); got != 1 {
		t.Errorf("%d NATS subscriptions for one handle, want 1", got)
	}
	if err := b.Publish(t.Context(), testMessage("alice", 5, `{}`)); err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		recv(t, l.msgs)
	}
}

func TestClusteredBrokers(t *testing.T) {
	t.Parallel()
	a := startBroker(t, clusterConfig())
	b := startBroker(t, clusterConfig(a.ClusterURL()))
	l := newListener()
	l.subscribe(t, b, "alice")
	waitInterest(t, a, "alice")
	sent := testMessage("alice", 1, `{"via":"a"}`)
	if err := a.Publish(t.Context(), sent); err != nil {
		t.Fatal(err)
	}
	// The listener gets the stored message JSON, as protocol.Marshal writes it.
	if m, want := recv(t, l.msgs), mustEncode(t, sent); m.Seq != 1 || !bytes.Equal(m.JSON, want) {
		t.Errorf("got seq %d %s, want seq 1 %s", m.Seq, m.JSON, want)
	}
}

// waitInterest waits until b's embedded server routes handle's inbox
// somewhere (after a route forms and a subscription propagates).
func waitInterest(t testing.TB, b *Broker, handle string) {
	t.Helper()
	acc := b.Server().GlobalAccount()
	if b.Server().SystemAccount() != nil && b.Server().SystemAccount().Name == AccountSystem {
		var err error
		if acc, err = b.Server().LookupAccount(AccountApp); err != nil {
			t.Fatal(err)
		}
	}
	// Interest arrives over a route asynchronously, with no event to wait on.
	testwait.Until(t, "interest in "+protocol.InboxSubject(handle), func() bool {
		return acc.SubscriptionInterest(protocol.InboxSubject(handle))
	})
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"bad listen":         {Listen: "nope"},
		"bad port":           {Listen: "127.0.0.1:99999"},
		"routes no cluster":  {Routes: []string{"nats://127.0.0.1:6222"}},
		"cluster no listen":  {ClusterListen: "127.0.0.1:-1", ClusterUser: "u", ClusterPassword: "p"},
		"bad route":          {Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterUser: "u", ClusterPassword: "p", Routes: []string{"::"}},
		"bad issuer":         {Auth: &Auth{Issuer: "x", ServiceUser: "U"}},
		"half a client cert": {URL: "nats://127.0.0.1:1", TLSCert: "c.pem"},
	} {
		t.Run(name, func(t *testing.T) {
			if b, err := Start(t.Context(), cfg, testLogger(t)); err == nil {
				b.Close(t.Context())
				t.Errorf("Start(%+v) succeeded", cfg)
			}
		})
	}
}

// TestStartPortTaken: an embedded server whose port is taken fails Start at
// once, saying why, rather than timing out.
func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	started := time.Now()
	b, err := Start(t.Context(), Config{Listen: ln.Addr().String()}, slog.New(slog.DiscardHandler))
	if err == nil {
		b.Close(t.Context())
		t.Fatal("started on a taken port")
	}
	if !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("error %q does not say why", err)
	}
	if waited := time.Since(started); waited > 5*time.Second {
		t.Fatalf("took %s to fail", waited)
	}
}

// TestStartContextEnded: Start under a context that has ended starts no
// server and says why.
func TestStartContextEnded(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b, err := Start(ctx, Config{Listen: "127.0.0.1:-1"}, slog.New(slog.DiscardHandler))
	if err == nil {
		b.Close(t.Context())
		t.Fatal("started under an ended context")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %q, want context.Canceled", err)
	}
}

// The embedded server refuses a message larger than anything kezd or a
// client needs (a send request, a stored message), so that no login can
// make the server hold megabytes per message.
func TestEmbeddedMaxPayload(t *testing.T) {
	b := startBroker(t, Config{Listen: "127.0.0.1:-1"})
	nc, err := nats.Connect(b.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := nc.Publish("kez.chat.send.alice", make([]byte, protocol.MaxSendBody)); err != nil {
		t.Fatalf("a send request of the largest size: %v", err)
	}
	if err := nc.Publish("kez.chat.send.alice", make([]byte, 200<<10)); !errors.Is(err, nats.ErrMaxPayload) {
		t.Fatalf("a 200 KiB publish: %v, want ErrMaxPayload", err)
	}
}
