package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
)

// session is an old-key session whose end a test waits for: an SSE stream
// or a NATS connection, with the moment it ended.
type session struct {
	name  string
	ended chan time.Time // receives once
}

func (s session) wait(t *testing.T, from time.Time) time.Duration {
	t.Helper()
	select {
	case at := <-s.ended:
		return at.Sub(from)
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not end after the revocation", s.name)
		return 0
	}
}

// streamFrom opens an SSE stream for id at base from cursor since (-1: now)
// and sends the seq of every message event to ids, exactly as the server
// sent them (the client package's Stream would hide a duplicate). end
// reports when the server ends the stream.
func streamFrom(t *testing.T, name, base string, id *envelope.Identity, since int64) (ids <-chan int64, end session) {
	t.Helper()
	ts := time.Now().Unix()
	sig := identity.Sign(id.Signing, identity.StreamString(id.Handle, ts))
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	u := fmt.Sprintf("%s/v1/inbox/%s/stream?auth=%d:%s", base, id.Handle, ts, sig)
	if since >= 0 {
		u += "&since=" + strconv.FormatInt(since, 10)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("stream %s: %s", name, resp.Status)
	}
	out := make(chan int64, 10000)
	end = session{name: name, ended: make(chan time.Time, 1)}
	ready, done := make(chan struct{}), make(chan struct{})
	// The reader ends with the test, which waits for it.
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		defer resp.Body.Close()
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		var eventID, event string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if event == "ready" {
					close(ready)
				}
				if event == "message" {
					n, _ := strconv.ParseInt(eventID, 10, 64)
					select {
					case out <- n:
					case <-ctx.Done():
						return
					}
				}
				eventID, event = "", ""
			case strings.HasPrefix(line, "id: "):
				eventID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				event = strings.TrimPrefix(line, "event: ")
			}
		}
		end.ended <- time.Now()
	}()
	select {
	case <-ready:
	case <-time.After(15 * time.Second):
		t.Fatalf("stream %s never became ready", name)
	}
	return out, end
}

// natsSession logs id in to the NATS at url and subscribes to its inbox, as
// a native client does; the session ends when the server disconnects it.
// It does not reconnect, so that a refused login cannot hide the end.
func natsSession(t *testing.T, name, url string, id *envelope.Identity) session {
	t.Helper()
	s := session{name: name, ended: make(chan time.Time, 1)}
	var once sync.Once
	nc, err := client.ConnectNATS(url, id, nats.NoReconnect(),
		nats.DisconnectErrHandler(func(*nats.Conn, error) { once.Do(func() { s.ended <- time.Now() }) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if _, err := client.SubscribeInbox(nc, id.Handle, func(client.Message) {}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return s
}

// wantNATSRefused checks that id cannot log in to the NATS at url.
func wantNATSRefused(t *testing.T, url string, id *envelope.Identity) {
	t.Helper()
	nc, err := client.ConnectNATS(url, id, nats.NoReconnect())
	if err == nil {
		nc.Close()
		t.Fatalf("NATS login at %s with a revoked key was accepted", url)
	}
	if !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("NATS login with a revoked key: %v, want an authorization violation", err)
	}
}

// twoInstances starts two kezd on one Postgres, their embedded NATS
// servers clustered, and returns them with a client for each.
func twoInstances(t *testing.T) (db string, a, b started, ca, cb *client.Client) {
	t.Helper()
	db = pgtest.NewDatabase(t)
	keys := t.TempDir()
	routeA := kezdtest.FreePort(t)
	a = startServe(t, "--database-url", db, "--data-dir", keys,
		"--nats-cluster-listen", fmt.Sprintf("127.0.0.1:%d", routeA))
	b = startServe(t, "--database-url", db, "--data-dir", keys,
		"--nats-cluster-listen", "127.0.0.1:-1", "--nats-routes", fmt.Sprintf("nats://127.0.0.1:%d", routeA))
	waitRouted(t, a, b)
	var err error
	if ca, err = client.New(a.HTTPURL); err != nil {
		t.Fatal(err)
	}
	if cb, err = client.New(b.HTTPURL); err != nil {
		t.Fatal(err)
	}
	return db, a, b, ca, cb
}

// TestRotationAcrossInstances: alice rotates through instance A; her old
// key's streams and NATS connections on both instances end, the old key is
// refused everywhere (HTTP and NATS login), and a stream reopened with the
// new key from her cursor receives everything, once. The times from the
// rotation to each session's end are logged: the protocol's bound is 2 s.
func TestRotationAcrossInstances(t *testing.T) {
	t.Parallel()
	_, a, b, ca, cb := twoInstances(t)
	ctx := t.Context()
	alice := kezdtest.Register(t, ctx, ca, "alice")
	bob := kezdtest.Register(t, ctx, cb, "bob")
	if _, err := ca.Send(ctx, bob, "alice", []byte("one")); err != nil {
		t.Fatal(err)
	}

	onB, streamB := streamFrom(t, "SSE stream on B", b.HTTPURL, alice, 0)
	_, streamA := streamFrom(t, "SSE stream on A", a.HTTPURL, alice, 0)
	natsB := natsSession(t, "NATS subscriber on B", b.NATSURL, alice)
	natsA := natsSession(t, "NATS subscriber on A", a.NATSURL, alice)
	if got := <-onB; got != 1 {
		t.Fatalf("stream on B got seq %d first, want 1", got)
	}

	next, err := envelope.Generate("alice")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := ca.Rotate(ctx, alice, next); err != nil {
		t.Fatal(err)
	}
	answered := time.Since(start)
	var last time.Duration
	for _, s := range []session{streamA, natsA, streamB, natsB} {
		d := s.wait(t, start)
		t.Logf("revocation: %s ended %v after the rotation request (answered after %v)", s.name, d.Round(time.Millisecond), answered.Round(time.Millisecond))
		last = max(last, d)
	}
	t.Logf("revocation: last old session ended %v after the rotation request", last.Round(time.Millisecond))
	for range onB {
		t.Fatal("the old stream on B delivered more after the rotation")
	}

	// The old key authenticates nothing, on either instance; lookup and
	// WebFinger give the new keys.
	for name, inst := range map[string]started{"A": a, "B": b} {
		c, err := client.New(inst.HTTPURL, client.WithWebFingerBase(func(string) string { return inst.HTTPURL }))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Poll(ctx, alice, client.PollOptions{})
		kezdtest.WantCode(t, err, protocol.CodeBadSignature)
		_, err = c.Send(ctx, alice, "bob", []byte("as the old alice"))
		kezdtest.WantCode(t, err, protocol.CodeBadSignature)
		h, err := c.Lookup(ctx, "alice")
		if err != nil || h.SigningKey != next.SigningKeyHex() || h.EncryptionKey != next.EncryptionKeyHex() {
			t.Fatalf("lookup on %s: %+v, %v; want the new keys", name, h, err)
		}
		acc, err := c.Resolve(ctx, "alice@"+strings.TrimPrefix(inst.HTTPURL, "http://"))
		if err != nil || acc.SigningKey != next.SigningKeyHex() || acc.EncryptionKey != next.EncryptionKeyHex() {
			t.Fatalf("webfinger on %s: %+v, %v; want the new keys", name, acc, err)
		}
	}
	wantNATSRefused(t, a.NATSURL, alice)
	wantNATSRefused(t, b.NATSURL, alice)
	if nc, err := client.ConnectNATS(b.NATSURL, next); err != nil {
		t.Fatalf("NATS login with the new key: %v", err)
	} else {
		nc.Close()
	}

	// Reconnected with the new key from its cursor, the stream on B gets
	// what was sent meanwhile and what comes next, each once.
	if _, err := ca.Send(ctx, bob, "alice", []byte("two")); err != nil {
		t.Fatal(err)
	}
	again, _ := streamFrom(t, "new stream on B", b.HTTPURL, next, 1)
	if _, err := ca.Send(ctx, bob, "alice", []byte("three")); err != nil {
		t.Fatal(err)
	}
	for want := int64(2); want <= 3; want++ {
		select {
		case got := <-again:
			if got != want {
				t.Fatalf("new stream got seq %d, want %d", got, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("new stream stopped before seq %d", want)
		}
	}
}

// TestDeletionAcrossInstances: alice deletes her account through B; her
// streams and NATS sessions end on both instances, her inbox is empty in the
// database, sends to her are 404, and neither the handle nor its key can be
// registered again.
func TestDeletionAcrossInstances(t *testing.T) {
	t.Parallel()
	db, a, b, ca, cb := twoInstances(t)
	ctx := t.Context()
	alice := kezdtest.Register(t, ctx, ca, "alice")
	bob := kezdtest.Register(t, ctx, cb, "bob")
	for _, text := range []string{"one", "two"} {
		if _, err := ca.Send(ctx, bob, "alice", []byte(text)); err != nil {
			t.Fatal(err)
		}
	}
	_, streamA := streamFrom(t, "SSE stream on A", a.HTTPURL, alice, -1)
	_, streamB := streamFrom(t, "SSE stream on B", b.HTTPURL, alice, -1)
	natsA := natsSession(t, "NATS subscriber on A", a.NATSURL, alice)
	natsB := natsSession(t, "NATS subscriber on B", b.NATSURL, alice)

	start := time.Now()
	if _, err := cb.DeleteAccount(ctx, alice); err != nil {
		t.Fatal(err)
	}
	var last time.Duration
	for _, s := range []session{streamA, natsA, streamB, natsB} {
		d := s.wait(t, start)
		t.Logf("deletion: %s ended %v after the request", s.name, d.Round(time.Millisecond))
		last = max(last, d)
	}
	t.Logf("deletion: last session ended %v after the request", last.Round(time.Millisecond))

	conn, err := pgx.Connect(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM messages WHERE recipient = 'alice'`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("alice's inbox holds %d rows in the database (%v), want 0", n, err)
	}
	for _, c := range []*client.Client{ca, cb} {
		_, err := c.Send(ctx, bob, "alice", []byte("too late"))
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)
		_, err = c.Lookup(ctx, "alice")
		kezdtest.WantCode(t, err, protocol.CodeUnknownHandle)
		_, err = c.Poll(ctx, alice, client.PollOptions{})
		kezdtest.WantCode(t, err, protocol.CodeUnauthorized)
	}
	wantNATSRefused(t, a.NATSURL, alice)
	wantNATSRefused(t, b.NATSURL, alice)
	fresh, err := envelope.Generate("alice")
	if err != nil {
		t.Fatal(err)
	}
	_, err = ca.Register(ctx, fresh)
	kezdtest.WantCode(t, err, protocol.CodeHandleTaken)
	sameKey := *alice
	sameKey.Handle = "alice2"
	_, err = cb.Register(ctx, &sameKey)
	kezdtest.WantCode(t, err, protocol.CodeKeyTaken)
}

// TestStoppedInstanceRefusesOldKey: an instance that was down while alice
// rotated (and so never heard the announcement) refuses her old key, over
// HTTP and NATS, once it is back.
func TestStoppedInstanceRefusesOldKey(t *testing.T) {
	t.Parallel()
	db := pgtest.NewDatabase(t)
	keys := t.TempDir()
	a := startServe(t, "--database-url", db, "--data-dir", keys)
	b, stopB := startServeStop(t, "--database-url", db, "--data-dir", keys)
	ctx := t.Context()
	ca, err := client.New(a.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := client.New(b.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	alice := kezdtest.Register(t, ctx, ca, "alice")
	// B has seen (and cached) alice's key before it stops.
	if _, err := cb.Poll(ctx, alice, client.PollOptions{}); err != nil {
		t.Fatal(err)
	}
	stopB()

	next, err := envelope.Generate("alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Rotate(ctx, alice, next); err != nil {
		t.Fatal(err)
	}

	b = startServe(t, "--database-url", db, "--data-dir", keys)
	if cb, err = client.New(b.HTTPURL); err != nil {
		t.Fatal(err)
	}
	_, err = cb.Poll(ctx, alice, client.PollOptions{})
	kezdtest.WantCode(t, err, protocol.CodeBadSignature)
	wantNATSRefused(t, b.NATSURL, alice)
	if _, err := cb.Poll(ctx, next, client.PollOptions{}); err != nil {
		t.Fatalf("poll with the new key on the restarted instance: %v", err)
	}
	var stream error
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream = cb.Stream(sctx, alice, client.StreamOptions{}, func(client.Message) error { return nil })
	if !client.IsCode(stream, protocol.CodeBadSignature) || errors.Is(stream, client.ErrKeyRevoked) {
		t.Fatalf("stream with the old key: %v, want bad_signature (not a revocation: it never opened)", stream)
	}
}
