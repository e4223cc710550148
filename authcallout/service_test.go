package authcallout_test

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/natsapi"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// env is one kezd deployment in miniature: an embedded server with the
// callout, the store, kezd's own connection and the core.
type env struct {
	srv        *server.Server
	url        string
	keys       deploykeys.Keys
	callot     *authcallout.Service
	app        *nats.Conn
	core       *chat.Service
	db         *sqlite.DB
	alice, bob user
	send       func(from, to, id, envelope string)
}

func newEnv(t *testing.T, s setup, cfg authcallout.Config, timeout time.Duration) *env {
	t.Helper()
	k := testKeys(t)
	n := s.start(t, k, timeout)
	db := teststore.SQLite(t)
	e := &env{srv: n.srv, url: n.url, keys: k, db: db, app: n.broker.Conn()}
	e.callot = startCallout(t, e.url, k, db, cfg)
	c := core(t, db, n.broker)
	e.core = c
	e.alice = register(t, db, "alice")
	e.bob = register(t, db, "bob")
	e.send = func(from, to, id, envelope string) { send(t, c, from, to, id, envelope) }
	return e
}

// onEverySetup runs test with an env of each setup, as parallel subtests.
func onEverySetup(t *testing.T, cfg authcallout.Config, timeout time.Duration, test func(t *testing.T, e *env)) {
	t.Helper()
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			test(t, newEnv(t, s, cfg, timeout))
		})
	}
}

func TestLoginReceivesInbox(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		nc := login(t, e.url, e.alice)
		sub, err := nc.SubscribeSync("kez.chat.inbox.alice")
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		e.send("bob", "alice", "m1", `{"ct":"<&>"}`)
		m := nextMsg(t, sub)
		if got := m.Header.Get("Kez-Seq"); got != "1" {
			t.Errorf("Kez-Seq = %q, want 1", got)
		}
		var stored struct {
			From     string          `json:"from"`
			Envelope json.RawMessage `json:"envelope"`
		}
		if err := json.Unmarshal(m.Data, &stored); err != nil {
			t.Fatal(err)
		}
		if stored.From != "bob" || string(stored.Envelope) != `{"ct":"<&>"}` {
			t.Errorf("got %s", m.Data)
		}
		if st := e.callot.Stats(); st.Authorized != 1 || st.Rejected != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}

// TestLoginWithoutName: the key alone identifies the handle.
func TestLoginWithoutName(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		nc := connect(t, e.url, kezLogin("", e.alice.priv)...)
		sub, err := nc.SubscribeSync("kez.chat.inbox.alice")
		if err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		e.send("bob", "alice", "m1", `"x"`)
		nextMsg(t, sub)
	})
}

func TestSendOverNATS(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		r, err := natsapi.StartSend(context.Background(), e.app, natsapi.SendConfig{}, e.core, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Stop)

		bob := login(t, e.url, e.bob)
		inbox, err := bob.SubscribeSync("kez.chat.inbox.bob")
		if err != nil {
			t.Fatal(err)
		}
		bob.Flush()

		alice := login(t, e.url, e.alice)
		body := `{"to":"bob","id":"n1","envelope":{"a":"<b>"}}`
		for i, wantDup := range []bool{false, true} {
			reply, err := alice.Request("kez.chat.send.alice", []byte(body), 10*time.Second)
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			var res struct {
				Seq       int64  `json:"seq"`
				To        string `json:"to"`
				ID        string `json:"id"`
				Duplicate bool   `json:"duplicate"`
			}
			if err := json.Unmarshal(reply.Data, &res); err != nil {
				t.Fatal(err)
			}
			if res.Seq != 1 || res.To != "bob" || res.ID != "n1" || res.Duplicate != wantDup {
				t.Errorf("reply %d: %s", i, reply.Data)
			}
		}
		m := nextMsg(t, inbox)
		if !strings.Contains(string(m.Data), `"from":"alice"`) || !strings.Contains(string(m.Data), `{"a":"<b>"}`) {
			t.Errorf("delivered %s", m.Data)
		}

		reply, err := alice.Request("kez.chat.send.alice", []byte(`{"to":"nobody","id":"n2","envelope":1}`), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if string(reply.Data) != `{"error":"unknown_handle","message":"no handle \"nobody\""}` {
			t.Errorf("unknown recipient reply: %s", reply.Data)
		}
	})
}

// TestPermissions: a logged-in handle may read only its own inbox and reply
// inboxes and publish only its own sends.
func TestPermissions(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		asyncErr := make(chan error, 16)
		nc := login(t, e.url, e.alice, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			// Subscription violations are asserted on the subscription itself.
			if !strings.Contains(err.Error(), "for Subscription") {
				asyncErr <- err
			}
		}))

		for _, subj := range []string{"kez.chat.inbox.bob", "kez.chat.inbox.*", "_INBOX.bob.>", "_INBOX.>", ">", "kez.chat.send.alice"} {
			t.Run("sub "+subj, func(t *testing.T) {
				sub, err := nc.SubscribeSync(subj)
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Unsubscribe()
				nc.Flush()
				if _, err := sub.NextMsg(10 * time.Second); !errors.Is(err, nats.ErrPermissionViolation) {
					t.Errorf("subscribe %s: %v, want a permissions violation", subj, err)
				}
			})
		}
		for _, subj := range []string{"kez.chat.inbox.alice", "kez.chat.inbox.bob", "kez.chat.send.bob", "_INBOX.alice.x", "other"} {
			t.Run("pub "+subj, func(t *testing.T) {
				if err := nc.Publish(subj, []byte("x")); err != nil {
					t.Fatal(err)
				}
				nc.Flush()
				select {
				case err := <-asyncErr:
					if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), subj) {
						t.Errorf("publish %s: %v", subj, err)
					}
				case <-time.After(10 * time.Second):
					t.Errorf("publish %s: no permissions violation", subj)
				}
			})
		}
		t.Run("allowed", func(t *testing.T) {
			for _, subj := range []string{"kez.chat.inbox.alice", "_INBOX.alice.>"} {
				sub, err := nc.SubscribeSync(subj)
				if err != nil {
					t.Fatal(err)
				}
				nc.Flush()
				// A refused subscription would already have its error here.
				if _, err := sub.NextMsg(time.Millisecond); !errors.Is(err, nats.ErrTimeout) {
					t.Errorf("subscribe %s: %v", subj, err)
				}
				sub.Unsubscribe()
			}
			// Nobody answers sends here: a request must fail for lack of a
			// responder, not for permissions.
			_, err := nc.Request("kez.chat.send.alice", []byte("{}"), 10*time.Second)
			if !errors.Is(err, nats.ErrNoResponders) {
				t.Errorf("request: %v, want no responders", err)
			}
			select {
			case err := <-asyncErr:
				t.Errorf("unexpected error: %v", err)
			default:
			}
		})
	})
}

func TestLoginRefused(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		stranger := newKey(t)
		tests := []struct {
			name string
			opts []nats.Option
		}{
			{"no credentials", nil},
			{"user name only", []nats.Option{nats.UserInfo("alice", "")}},
			{"password", []nats.Option{nats.UserInfo("alice", "secret")}},
			{"token only", []nats.Option{nats.Token("alice")}},
			{"unknown key", kezLogin("alice", stranger)},
			{"unknown key without name", kezLogin("", stranger)},
			{"key of another handle", kezLogin("bob", e.alice.priv)},
			{"token of another handle", append(kezLogin("", e.alice.priv), nats.Token("bob"))},
			{"bad signature", badSignature(t, e.alice)},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				nc, err := nats.Connect(e.url, tt.opts...)
				if err == nil {
					nc.Close()
					t.Fatal("connected")
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Errorf("err = %v, want an authorization violation", err)
				}
			})
		}
		if st := e.callot.Stats(); st.Authorized != 0 || st.Rejected != int64(len(tests)) {
			t.Errorf("stats %+v, want %d rejected", st, len(tests))
		}
	})
}

// TestWeakKeyLoginRefused: a small-order signing key stored before kezd
// refused them does not log in, though the constant signature R = identity,
// S = 0 verifies for every nonce under it.
func TestWeakKeyLoginRefused(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		identityPoint := append([]byte{1}, make([]byte, 31)...)
		if _, err := e.db.CreateHandle(t.Context(), store.Handle{Handle: "weak", SigningKey: hex.EncodeToString(identityPoint), EncryptionKey: strings.Repeat("ab", 32)}); err != nil {
			t.Fatal(err)
		}
		constantSig := append([]byte{1}, make([]byte, 63)...)
		if !ed25519.Verify(identityPoint, []byte("any nonce"), constantSig) {
			t.Fatal("precondition: the constant signature verifies under the identity key")
		}
		nk, err := nkeyPublic(identityPoint)
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(e.url, nats.Nkey(nk, func([]byte) ([]byte, error) { return constantSig, nil }), nats.UserInfo("weak", ""))
		if err == nil {
			nc.Close()
			t.Fatal("the identity key logged in")
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("err = %v, want an authorization violation", err)
		}
	})
}

// badSignature presents alice's key but signs the nonce with another one.
func badSignature(t *testing.T, u user) []nats.Option {
	other := newKey(t)
	opts := kezLogin(u.handle, other)
	nk, _ := nkeyPublic(u.pub())
	return append(opts, func(o *nats.Options) error {
		o.Nkey = nk
		return nil
	})
}

// TestTokenNamesHandle: the nats CLI's --user with --nkey arrives as a token.
func TestTokenNamesHandle(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, authTimeout, func(t *testing.T, e *env) {
		connect(t, e.url, append(kezLogin("", e.alice.priv), nats.Token("alice"))...)
	})
}

// TestExpiryReauthenticates: at JWT expiry the server drops the client, which
// logs in again with a fresh nonce and keeps its subscriptions.
func TestExpiryReauthenticates(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{TTL: time.Second}, authTimeout, func(t *testing.T, e *env) {
		reconnected := make(chan struct{}, 4)
		nc := login(t, e.url, e.alice,
			nats.ReconnectWait(20*time.Millisecond),
			nats.MaxReconnects(100),
			nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }),
			nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {})) // expiry is expected
		sub, err := nc.SubscribeSync("kez.chat.inbox.alice")
		if err != nil {
			t.Fatal(err)
		}
		nc.Flush()
		select {
		case <-reconnected:
		case <-time.After(30 * time.Second):
			t.Fatal("no reconnect after the JWT expired")
		}
		if st := e.callot.Stats(); st.Authorized < 2 {
			t.Errorf("stats %+v: want a second login", st)
		}
		nc.Flush()
		e.send("bob", "alice", "after", `1`)
		nextMsg(t, sub)
	})
}

// TestServiceStopped: without a responder new logins fail at the auth
// timeout; clients already logged in keep working.
func TestServiceStopped(t *testing.T) {
	t.Parallel()
	onEverySetup(t, authcallout.Config{}, 2*time.Second, func(t *testing.T, e *env) {
		nc := login(t, e.url, e.alice)
		sub, err := nc.SubscribeSync("kez.chat.inbox.alice")
		if err != nil {
			t.Fatal(err)
		}
		nc.Flush()

		e.callot.Stop()
		if got := refusedLogin(t, e.url, e.bob); !strings.Contains(got, "Authorization Violation") {
			t.Errorf("new login: %q, want an authorization violation", got)
		}
		e.send("bob", "alice", "m1", `1`)
		nextMsg(t, sub)
		if !nc.IsConnected() {
			t.Error("existing connection dropped")
		}
	})
}

// refusedLogin logs in as u with its kez key over a plain TCP connection and
// returns the server's -ERR line. Unlike nats.go, which fails a login that
// sees the server's first PING (about 2 s after CONNECT) before the answer,
// it answers PINGs while it waits for the auth timeout.
func refusedLogin(t *testing.T, url string, u user) string {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("INFO: %q, %v", line, err)
	}
	var info struct {
		Nonce string `json:"nonce"`
	}
	if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "INFO ")), &info); err != nil {
		t.Fatal(err)
	}
	nk, err := nkeyPublic(u.pub())
	if err != nil {
		t.Fatal(err)
	}
	connect, _ := json.Marshal(map[string]any{"verbose": false, "pedantic": false, "protocol": 1, "user": u.handle,
		"nkey": nk, "sig": base64.RawURLEncoding.EncodeToString(ed25519.Sign(u.priv, []byte(info.Nonce)))})
	if _, err := fmt.Fprintf(conn, "CONNECT %s\r\nPING\r\n", connect); err != nil {
		t.Fatal(err)
	}
	for {
		line, err := r.ReadString('\n')
		switch {
		case err != nil:
			t.Fatalf("waiting for the login's answer: %v", err)
		case strings.HasPrefix(line, "PING"):
			fmt.Fprint(conn, "PONG\r\n")
		case strings.HasPrefix(line, "-ERR"):
			return strings.TrimSpace(line)
		default:
			t.Fatalf("the login was answered %q", line)
		}
	}
}

// TestQueueGroup: with two instances' responders, each login is answered once.
func TestQueueGroup(t *testing.T) {
	t.Parallel()
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			k := testKeys(t)
			url := s.start(t, k, authTimeout).url
			db := teststore.SQLite(t)
			alice := register(t, db, "alice")
			a := startCallout(t, url, k, db, authcallout.Config{})
			b := startCallout(t, url, k, db, authcallout.Config{})
			const n = 10
			for range n {
				nc := login(t, url, alice)
				nc.Close()
			}
			sa, sb := a.Stats(), b.Stats()
			if sa.Authorized+sb.Authorized != n || sa.Dropped+sb.Dropped != 0 {
				t.Errorf("stats %+v and %+v, want %d logins in all", sa, sb, n)
			}
		})
	}
}
