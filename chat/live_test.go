package chat_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
	"github.com/nats-io/nats.go"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// openDB opens a fresh Postgres database with alice and bob registered.
func openDB(t testing.TB) *postgres.DB {
	t.Helper()
	return openURL(t, pgtest.NewDatabase(t), "alice", "bob")
}

func openURL(t testing.TB, url string, handles ...string) *postgres.DB {
	t.Helper()
	db := teststore.PostgresOn(t, url)
	register(t, db, handles...)
	return db
}

func register(t testing.TB, db chat.Store, handles ...string) {
	t.Helper()
	for _, h := range handles {
		// Fake but distinct keys: these tests never check signatures.
		_, err := db.CreateHandle(context.Background(), store.Handle{
			Handle: h, SigningKey: strings.Repeat("a", 60) + fmt.Sprintf("%04x", len(h)) + h, EncryptionKey: "ek-" + h,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// owner returns handle as registered, for calls made as its owner.
func owner(t testing.TB, svc *chat.Service, handle string) store.Handle {
	t.Helper()
	h, err := svc.Lookup(context.Background(), handle)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// openBackend opens a fresh store of b with alice and bob registered.
func openBackend(t testing.TB, b teststore.Backend) teststore.Prunable {
	t.Helper()
	db := b.Open(t)
	register(t, db, "alice", "bob")
	return db
}

func startBroker(t testing.TB, cfg broker.Config) *broker.Broker {
	t.Helper()
	return brokertest.Start(t, cfg, nil)
}

// newService is a chat.Service on db; b may be nil (no broker).
//
// With a broker, the safety-net store reads are an hour away, so that what
// a test sees live was carried by the broker: a broken live path fails the
// test instead of being covered by the recheck a second later.
func newService(db chat.Store, b *broker.Broker) *chat.Service {
	if b == nil {
		return chat.New(chat.Config{}, db, nil, nil, slog.New(slog.DiscardHandler))
	}
	return chat.New(brokerOnly, db, b, b, slog.New(slog.DiscardHandler))
}

var brokerOnly = chat.Config{Recheck: time.Hour, RecheckEvery: time.Hour}

// send sends a message from alice to bob and returns its seq.
func send(t testing.TB, svc *chat.Service, id string) int64 {
	t.Helper()
	body := fmt.Sprintf(`{"to":"bob","id":%q,"envelope":{"n":%q,"html":"<&>"}}`, id, id)
	r, err := svc.Send(context.Background(), "alice", []byte(body))
	if err != nil {
		t.Errorf("send %s: %v", id, err)
	}
	return r.Seq
}

// follower runs Follow in the background and collects its events.
type follower struct {
	events chan chat.Event
	done   chan error
	cancel context.CancelFunc
}

func follow(t testing.TB, svc *chat.Service, cursor chat.Cursor) *follower {
	t.Helper()
	return followWith(t, svc, cursor, nil)
}

// followWith lets emit be held: before each message event it waits on gate
// (when not nil).
func followWith(t testing.TB, svc *chat.Service, cursor chat.Cursor, gate <-chan struct{}) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{events: make(chan chat.Event, 10000), done: make(chan error, 1), cancel: cancel}
	go func() {
		f.done <- svc.Follow(ctx, owner(t, svc, "bob"), cursor, func(e chat.Event) error {
			if gate != nil && e.Kind == chat.EventMessage {
				<-gate
			}
			if e.Kind == chat.EventFlush {
				return nil // checked by TestFollowFlushesEachBurst
			}
			f.events <- e
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-f.done; err != nil {
			t.Errorf("Follow: %v", err)
		}
	})
	return f
}

func (f *follower) next(t testing.TB) chat.Event {
	t.Helper()
	select {
	case e := <-f.events:
		return e
	case err := <-f.done:
		t.Fatalf("Follow ended early: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("timed out waiting for an event")
	}
	return chat.Event{}
}

// ready waits for the ready event and returns its latest.
func (f *follower) ready(t testing.TB) int64 {
	t.Helper()
	e := f.next(t)
	if e.Kind != chat.EventReady {
		t.Fatalf("got %+v, want ready", e)
	}
	return e.Latest
}

// expect reads messages and checks their seqs are exactly want, in order.
func (f *follower) expect(t testing.TB, want ...int64) {
	t.Helper()
	for _, w := range want {
		e := f.next(t)
		if e.Kind != chat.EventMessage || e.Message.Seq != w {
			t.Fatalf("got %v seq %d, want message seq %d", e.Kind, e.Message.Seq, w)
		}
	}
}

func seqs(from, to int64) []int64 {
	var s []int64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestFollowBacklogReadyLive(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	for i := range 3 {
		send(t, svc, fmt.Sprintf("m%d", i))
	}
	f := follow(t, svc, chat.Cursor{Seq: 1})
	f.expect(t, 2, 3)
	if got := f.ready(t); got != 3 {
		t.Errorf("ready latest = %d, want 3", got)
	}
	send(t, svc, "m3")
	send(t, svc, "m4")
	f.expect(t, 4, 5)
	// The envelope reaches the stream as it was sent.
	send(t, svc, "m5")
	e := f.next(t)
	var m store.Message
	if err := json.Unmarshal(e.Message.JSON, &m); err != nil {
		t.Fatal(err)
	}
	if got, want := string(m.Envelope), `{"n":"m5","html":"<&>"}`; got != want {
		t.Errorf("envelope %s, want %s", got, want)
	}
}

func TestFollowCursorNow(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	send(t, svc, "old1")
	send(t, svc, "old2")
	f := follow(t, svc, chat.Cursor{Now: true})
	if got := f.ready(t); got != 2 {
		t.Errorf("ready latest = %d, want 2 (nothing sent before it)", got)
	}
	send(t, svc, "new")
	f.expect(t, 3)
}

// Follow marks the end of each burst (the backlog with its ready event, then
// each live delivery) with one flush, so that a writer can send a burst in
// one write, and never leaves an event unflushed while it waits.
func TestFollowFlushesEachBurst(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	for i := range 3 {
		send(t, svc, fmt.Sprintf("m%d", i))
	}
	ctx, cancel := context.WithCancel(t.Context())
	events := make(chan string, 100)
	done := make(chan error, 1)
	go func() {
		done <- svc.Follow(ctx, owner(t, svc, "bob"), chat.Cursor{}, func(e chat.Event) error {
			events <- describe(e)
			return nil
		})
	}()
	next := func() string {
		t.Helper()
		select {
		case e := <-events:
			return e
		case err := <-done:
			t.Fatalf("Follow ended: %v", err)
		case <-time.After(15 * time.Second):
			t.Fatal("timed out waiting for an event")
		}
		return ""
	}
	var got []string
	for range 5 {
		got = append(got, next())
	}
	if want := []string{"message 1", "message 2", "message 3", "ready 3", "flush"}; !slices.Equal(got, want) {
		t.Errorf("backlog: got %q, want %q", got, want)
	}
	send(t, svc, "m3")
	if got := []string{next(), next()}; !slices.Equal(got, []string{"message 4", "flush"}) {
		t.Errorf("live: got %q, want message 4 then flush", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Follow: %v", err)
	}
}

// listCounter counts the store listings a stream makes.
type listCounter struct {
	chat.Store
	lists atomic.Int64
}

func (c *listCounter) ListMessagesUpTo(ctx context.Context, to string, since int64, limit, maxBytes int) ([]store.Message, error) {
	c.lists.Add(1)
	return c.Store.ListMessagesUpTo(ctx, to, since, limit, maxBytes)
}

// A stream opened at "now" has no backlog to list: it reads the latest seq
// and nothing else before ready, which is most of what a reconnect storm of
// new streams costs the store; one opened at a cursor lists from there.
func TestFollowNowListsNothing(t *testing.T) {
	t.Parallel()
	db := &listCounter{Store: openDB(t)}
	b := startBroker(t, broker.Config{})
	svc := newService(db, b)
	send(t, svc, "m0")
	f := follow(t, svc, chat.Cursor{Now: true})
	if got := f.ready(t); got != 1 {
		t.Errorf("ready latest = %d, want 1", got)
	}
	if n := db.lists.Load(); n != 0 {
		t.Errorf("%d listings before ready, want 0", n)
	}
	send(t, svc, "m1")
	f.expect(t, 2) // and the stream is live
	g := follow(t, svc, chat.Cursor{Seq: 0})
	g.expect(t, 1, 2)
	g.ready(t)
	if n := db.lists.Load(); n != 1 {
		t.Errorf("%d listings for both streams, want 1 (the cursor's)", n)
	}
}

func TestFollowEndsWithContextAndEmitError(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	send(t, svc, "m1")
	boom := errors.New("client gone")
	err := svc.Follow(t.Context(), owner(t, svc, "bob"), chat.Cursor{}, func(chat.Event) error { return boom })
	if !errors.Is(err, boom) {
		t.Errorf("Follow = %v, want the emit error", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	err = svc.Follow(ctx, owner(t, svc, "bob"), chat.Cursor{}, func(e chat.Event) error {
		if e.Kind == chat.EventReady {
			cancel()
		}
		return nil
	})
	if err != nil {
		t.Errorf("Follow after cancel = %v, want nil", err)
	}
}

// Two connections, the second resuming from the last event the first
// received, while a sender keeps sending: every message exactly once, in order.
func TestFollowResumeExactlyOnce(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	const total = 60
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range total {
			send(t, svc, fmt.Sprintf("m%d", i))
		}
	})
	first := follow(t, svc, chat.Cursor{})
	var got []int64
	for len(got) < total/3 {
		if e := first.next(t); e.Kind == chat.EventMessage {
			got = append(got, e.Message.Seq)
		}
	}
	first.cancel()
	<-first.done
	first.done <- nil // for its cleanup
	// Whatever the first emitted after we stopped reading is lost with it,
	// as bytes written to a dropped connection would be.
	second := follow(t, svc, chat.Cursor{Seq: got[len(got)-1]})
	for len(got) < total {
		if e := second.next(t); e.Kind == chat.EventMessage {
			got = append(got, e.Message.Seq)
		}
	}
	wg.Wait()
	for i, s := range got {
		if s != int64(i+1) {
			t.Fatalf("sequence across two connections %v: want 1..%d once each", got, total)
		}
	}
}

// The stream's broker goes away while messages are sent (some published
// into the void, some never published), then comes back: the open stream
// gets every message once, in order.
func TestFollowSurvivesBrokerOutage(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	nats1 := startBroker(t, broker.Config{Listen: "127.0.0.1:-1"})
	url := nats1.ClientURL()
	b := startBroker(t, broker.Config{URL: url})
	svc := newService(db, b)
	storeOnly := newService(db, nil) // a send whose publish is lost

	f := follow(t, svc, chat.Cursor{})
	f.ready(t)
	send(t, svc, "m1")
	f.expect(t, 1)

	down := b.Conn().StatusChanged(nats.RECONNECTING)
	if err := nats1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-down
	send(t, storeOnly, "m2")
	send(t, svc, "m3") // buffered by the client, flushed on reconnect
	send(t, storeOnly, "m4")

	up := b.Conn().StatusChanged(nats.CONNECTED)
	startBroker(t, broker.Config{Listen: strings.TrimPrefix(url, "nats://")})
	<-up
	f.expect(t, 2, 3, 4)
	send(t, svc, "m5")
	f.expect(t, 5) // and nothing twice before it
}

// Two instances on one Postgres with clustered embedded NATS: concurrent
// senders through both, and a stream on each sees the same complete sequence.
func TestFollowTwoInstancesClustered(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	dbA := openURL(t, url, "alice", "bob")
	dbB := openURL(t, url)
	natsA := startBroker(t, broker.Config{Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterName: "kez", ClusterUser: "route", ClusterPassword: "route-secret"})
	natsB := startBroker(t, broker.Config{Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterName: "kez", ClusterUser: "route", ClusterPassword: "route-secret", Routes: []string{natsA.ClusterURL()}})
	svcA, svcB := newService(dbA, natsA), newService(dbB, natsB)

	fA := follow(t, svcA, chat.Cursor{})
	fB := follow(t, svcB, chat.Cursor{})
	fA.ready(t)
	fB.ready(t)
	// Each server routes bob's inbox to both instances: its own stream's
	// subscription and the route to the other server.
	brokertest.WaitInterest(t, natsA, "bob", 2)
	brokertest.WaitInterest(t, natsB, "bob", 2)

	const perSender, senders = 25, 4
	var wg sync.WaitGroup
	for i := range senders {
		svc := []*chat.Service{svcA, svcB}[i%2]
		wg.Go(func() {
			for j := range perSender {
				send(t, svc, fmt.Sprintf("s%d-%d", i, j))
			}
		})
	}
	wg.Wait()
	fA.expect(t, seqs(1, perSender*senders)...)
	fB.expect(t, seqs(1, perSender*senders)...)
}

// A reader that stops reading while many messages arrive: its live buffer
// overflows, and once it reads again it gets everything once, in order.
func TestFollowSlowReaderCatchesUp(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	gate := make(chan struct{})
	f := followWith(t, svc, chat.Cursor{}, gate)
	f.ready(t)
	const total = 300 // well past the live buffer
	for i := range total {
		send(t, svc, fmt.Sprintf("m%d", i))
	}
	close(gate)
	f.expect(t, seqs(1, total)...)
	send(t, svc, "after")
	f.expect(t, total+1)
}

func TestFollowWithoutBroker(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, nil)
	send(t, svc, "m1")
	f := follow(t, svc, chat.Cursor{})
	f.expect(t, 1)
	f.ready(t)
	send(t, svc, "m2")
	f.expect(t, 2) // found by the periodic store read
}

func TestPollWakesOnMessage(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	b := startBroker(t, broker.Config{})
	svc := newService(db, b)
	send(t, svc, "m1")
	got := make(chan []store.Message, 1)
	go func() {
		ms, err := svc.Poll(t.Context(), owner(t, svc, "bob"), 1, 10, protocol.MaxPollWait)
		if err != nil {
			t.Errorf("Poll: %v", err)
		}
		got <- ms
	}()
	// Send only once the poll is waiting (it has subscribed), so that it
	// must wake on the message rather than find it.
	brokertest.WaitInterest(t, b, "bob", 1)
	send(t, svc, "m2")
	// Well before protocol.MaxPollWait (and the hour-long recheck): the poll woke up.
	select {
	case ms := <-got:
		if len(ms) != 1 || ms[0].Seq != 2 {
			t.Errorf("Poll returned %+v, want seq 2", ms)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Poll did not wake on a message")
	}
}

func TestPollReturnsAtOnceWhenThereIsSomething(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	svc := newService(db, startBroker(t, broker.Config{}))
	send(t, svc, "m1")
	ms, err := svc.Poll(t.Context(), owner(t, svc, "bob"), 0, 10, protocol.MaxPollWait)
	if err != nil || len(ms) != 1 {
		t.Fatalf("Poll = %v, %v", ms, err)
	}
}

func TestPollTimesOutEmpty(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	b := startBroker(t, broker.Config{})
	// The NATS subscription is set up outside the bubble (its round trip runs
	// on the client's goroutines); Poll's own Subscribe then shares it.
	cancel, err := b.Subscribe(t.Context(), "bob", func(protocol.Encoded) {}, func() {})
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	synctest.Test(t, func(t *testing.T) {
		svc := newService(db, b)
		start := time.Now()
		ms, err := svc.Poll(t.Context(), owner(t, svc, "bob"), 0, 10, time.Hour) // clamped to protocol.MaxPollWait
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 0 {
			t.Errorf("Poll returned %d messages, want none", len(ms))
		}
		if waited := time.Since(start); waited != protocol.MaxPollWait {
			t.Errorf("waited %s, want %s", waited, protocol.MaxPollWait)
		}
	})
}

// TestFollowRecoversUnpublishedMessage covers a message the broker never
// carries (its publish was lost, or it fell in a cluster's interest window):
// the stream's safety-net read of the store delivers it without any further
// message or reconnect. The broker is a cluster (of one), where the default
// safety net reads the store a second after setup.
func TestFollowRecoversUnpublishedMessage(t *testing.T) {
	t.Parallel()
	db := openDB(t)
	b := startBroker(t, broker.Config{Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterName: "kez", ClusterUser: "route", ClusterPassword: "route-secret"})
	following := chat.New(chat.Config{}, db, b, b, slog.New(slog.DiscardHandler))  // the default safety net
	silent := chat.New(chat.Config{}, db, nil, nil, slog.New(slog.DiscardHandler)) // stores, never publishes
	f := follow(t, following, chat.Cursor{Now: true})
	f.ready(t)
	send(t, silent, "unpublished")
	f.expect(t, 1)
}

// describe names an event for comparisons: "message 3", "reset 3", "ready 4".
func describe(e chat.Event) string {
	switch e.Kind {
	case chat.EventMessage:
		return fmt.Sprintf("message %d", e.Message.Seq)
	case chat.EventReady:
		return fmt.Sprintf("ready %d", e.Latest)
	case chat.EventReset:
		return fmt.Sprintf("reset %d", e.Oldest)
	case chat.EventFlush:
		return "flush"
	}
	return fmt.Sprintf("kind %d", e.Kind)
}

// expectEvents reads len(want) events and checks them against want.
func (f *follower) expectEvents(t testing.TB, want ...string) {
	t.Helper()
	var got []string
	for range want {
		got = append(got, describe(f.next(t)))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// Messages deleted between the cursor and the oldest kept message are
// announced by one reset per run of deleted seqs, naming the message that
// follows; a cursor past the latest stored seq is read as that seq.
func TestFollowResetAfterDeletion(t *testing.T) {
	t.Parallel()
	type span struct{ from, to int64 }
	tests := []struct {
		name    string
		sent    int64
		deleted []span
		cursor  chat.Cursor
		backlog []string // the events up to ready
		live    []string // the events once one more message is sent
	}{
		{"gap after the cursor", 4, []span{{1, 2}}, chat.Cursor{Seq: 0},
			[]string{"reset 3", "message 3", "message 4", "ready 4"}, []string{"message 5"}},
		{"cursor inside the gap", 4, []span{{1, 2}}, chat.Cursor{Seq: 1},
			[]string{"reset 3", "message 3", "message 4", "ready 4"}, []string{"message 5"}},
		{"cursor at the end of the gap", 4, []span{{1, 2}}, chat.Cursor{Seq: 2},
			[]string{"message 3", "message 4", "ready 4"}, []string{"message 5"}},
		{"one reset per gap", 6, []span{{2, 3}, {5, 5}}, chat.Cursor{Seq: 0},
			[]string{"message 1", "reset 4", "message 4", "reset 6", "message 6", "ready 6"}, []string{"message 7"}},
		{"now", 4, []span{{1, 2}}, chat.Cursor{Now: true},
			[]string{"ready 4"}, []string{"message 5"}},
		{"no deletion", 2, nil, chat.Cursor{Seq: 0},
			[]string{"message 1", "message 2", "ready 2"}, []string{"message 3"}},
		{"cursor beyond the latest", 4, nil, chat.Cursor{Seq: 99},
			[]string{"ready 4"}, []string{"message 5"}},
		// The latest seq is the inbox's counter, which deletions leave
		// alone: ready names the cursor, as when nothing was sent.
		{"all deleted, the client had them", 3, []span{{1, 3}}, chat.Cursor{Seq: 3},
			[]string{"ready 3"}, []string{"message 4"}},
		{"all deleted, the client had some", 3, []span{{1, 3}}, chat.Cursor{Seq: 1},
			[]string{"ready 1"}, []string{"reset 4", "message 4"}},
		{"all deleted, now", 3, []span{{1, 3}}, chat.Cursor{Now: true},
			[]string{"ready 3"}, []string{"message 4"}},
	}
	for _, b := range teststore.Backends {
		for _, tt := range tests {
			t.Run(b.Name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				db := openBackend(t, b)
				svc := newService(db, startBroker(t, broker.Config{}))
				for i := range tt.sent {
					send(t, svc, fmt.Sprintf("m%d", i))
				}
				for _, d := range tt.deleted {
					db.DeleteSeqs(t, "bob", d.from, d.to)
				}
				f := follow(t, svc, tt.cursor)
				f.expectEvents(t, tt.backlog...)
				send(t, svc, "live")
				f.expectEvents(t, tt.live...)
			})
		}
	}
}

// A live message that skips ahead of the stream sends it to the store for
// the messages in between; when those were deleted meanwhile, the stream
// says so before the live message.
func TestFollowResetOnLiveGap(t *testing.T) {
	t.Parallel()
	for _, b := range teststore.Backends {
		t.Run(b.Name, func(t *testing.T) {
			t.Parallel()
			db := openBackend(t, b)
			svc := newService(db, startBroker(t, broker.Config{}))
			silent := newService(db, nil) // stores, never publishes
			send(t, svc, "m1")
			send(t, svc, "m2")
			gate := make(chan struct{})
			f := followWith(t, svc, chat.Cursor{}, gate)
			// The stream takes this at message 1, so it has read its backlog
			// (1 and 2); it holds at message 2 until the gate closes.
			gate <- struct{}{}
			send(t, silent, "m3")
			send(t, silent, "m4")
			db.DeleteSeqs(t, "bob", 3, 4)
			send(t, svc, "m5") // published: the stream's next live message
			close(gate)
			f.expectEvents(t, "message 1", "message 2", "ready 2", "reset 5", "message 5")
			send(t, svc, "m6")
			f.expectEvents(t, "message 6")
		})
	}
}

// handLive is a Live whose test delivers the messages itself, in the order
// it chooses.
type handLive struct {
	mu      sync.Mutex
	deliver func(protocol.Encoded)
}

func (l *handLive) Subscribe(_ context.Context, _ string, deliver func(protocol.Encoded), _ func()) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deliver = deliver
	return func() {}, nil
}

func (l *handLive) AnnounceRevocation(context.Context, chat.Revocation) error { return nil }

func (l *handLive) send(m protocol.Encoded) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.deliver(m)
}

// The messages of one group commit reach NATS in any order (their senders
// publish them at once): those queued together go out in seq order, with
// no gap fill from the store.
func TestFollowSortsWhatArrivesTogether(t *testing.T) {
	t.Parallel()
	db := &listCounter{Store: openDB(t)}
	live := &handLive{}
	svc := chat.New(brokerOnly, db, nil, live, slog.New(slog.DiscardHandler))
	var seqs []int64
	inFirst, release := make(chan struct{}), make(chan struct{})
	ready := make(chan int64, 1)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- svc.Follow(ctx, owner(t, svc, "bob"), chat.Cursor{Now: true}, func(e chat.Event) error {
			switch e.Kind {
			case chat.EventReady:
				ready <- e.Latest
			case chat.EventMessage:
				if seqs = append(seqs, e.Message.Seq); len(seqs) == 1 {
					close(inFirst) // the stream has taken message 1 and emits it
					<-release
				}
				if len(seqs) == 3 {
					cancel()
				}
			}
			return nil
		})
	}()
	if got := <-ready; got != 0 {
		t.Fatalf("ready latest = %d, want 0", got)
	}
	stored := func(id string) protocol.Encoded {
		t.Helper()
		a, err := db.AppendMessage(t.Context(), store.NewMessage{From: "alice", To: "bob", ID: id, Envelope: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
		return protocol.Encode(a.Message)
	}
	m1, m2, m3 := stored("m1"), stored("m2"), stored("m3")
	live.send(m1)
	<-inFirst
	live.send(m3) // 3 and 2 are queued together while the stream emits 1
	live.send(m2)
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Follow: %v", err)
	}
	if !slices.Equal(seqs, []int64{1, 2, 3}) {
		t.Errorf("stream sent %v, want [1 2 3]", seqs)
	}
	if n := db.lists.Load(); n != 0 {
		t.Errorf("%d store listings, want 0: 2 and 3 arrived together", n)
	}
}
