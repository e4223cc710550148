package authcallout_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// authTimeout is the servers' auth timeout in tests: generous, because under
// -race on two busy cores a callout round trip can take far longer than 1 s.
const authTimeout = 10 * time.Second

// Plain user of the application account that bypasses the callout: the
// benchmark's baseline login.
const (
	plainUser     = "plain"
	plainPassword = "plain-password"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testKeys(t testing.TB) deploykeys.Keys {
	t.Helper()
	k, err := deploykeys.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func public(t testing.TB, k deploykeys.Keys) deploykeys.PublicKeys {
	t.Helper()
	p, err := k.Public()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startServer runs an embedded nats-server on a random port set up as kezd
// sets one up, from broker's names for the topology: SYS, AUTH and APP accounts, the callout service user, kezd's
// own user, the callout sealed with the xkey, and a nonce for every client.
func startServer(t testing.TB, k deploykeys.Keys, timeout time.Duration) *server.Server {
	t.Helper()
	p := public(t, k)
	sys, auth, app := server.NewAccount(broker.AccountSystem), server.NewAccount(broker.AccountAuth), server.NewAccount(broker.AccountApp)
	opts := &server.Options{
		Host:          "127.0.0.1",
		Port:          -1,
		NoLog:         true,
		NoSigs:        true,
		Accounts:      []*server.Account{sys, auth, app},
		SystemAccount: broker.AccountSystem,
		Nkeys: []*server.NkeyUser{
			{Nkey: p.Service, Account: auth, Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{broker.CalloutReplies}},
				Subscribe: &server.SubjectPermission{Allow: []string{broker.CalloutSubject}},
			}},
			{Nkey: p.App, Account: app},
		},
		Users: []*server.User{{Username: plainUser, Password: plainPassword, Account: app}},
		AuthCallout: &server.AuthCallout{
			Issuer:    p.Issuer,
			Account:   broker.AccountAuth,
			AuthUsers: []string{p.Service, p.App, plainUser},
			XKey:      p.XKey,
		},
		AlwaysEnableNonce: true,
		AuthTimeout:       timeout.Seconds(),
		// The server's first ping to a client comes after about 2 s, which
		// races a login still waiting on a stopped callout
		// (TestServiceStopped): nats.go then fails with "expected PONG,
		// got PING" instead of the authorization violation.
		DisableShortFirstPing: true,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	return s
}

func connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// startCallout connects as the service user and starts the callout service.
func startCallout(t testing.TB, url string, k deploykeys.Keys, lookup authcallout.HandleLookup, cfg authcallout.Config) *authcallout.Service {
	t.Helper()
	nc := connect(t, url, k.ServiceUser(), nats.Name("kezd-authcallout"))
	cfg.Keys = k
	svc, err := authcallout.Start(context.Background(), nc, cfg, lookup, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return svc
}

func openStore(t testing.TB) *sqlite.DB {
	t.Helper()
	db, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "kez.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// user is a registered handle with its private signing key.
type user struct {
	handle string
	priv   ed25519.PrivateKey
}

func (u user) pub() ed25519.PublicKey { return u.priv.Public().(ed25519.PublicKey) }

func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

func register(t testing.TB, db *sqlite.DB, handle string) user {
	t.Helper()
	u := user{handle: handle, priv: newKey(t)}
	enc := make([]byte, 32)
	rand.Read(enc)
	_, err := db.CreateHandle(context.Background(), store.Handle{
		Handle:        handle,
		SigningKey:    hex.EncodeToString(u.pub()),
		EncryptionKey: hex.EncodeToString(enc),
	})
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// kezLogin is how a native client logs in with a kez key: the signing key as
// the nkey, the nonce signed with it, the handle as user name, and reply
// inboxes under the handle's own prefix.
func kezLogin(handle string, priv ed25519.PrivateKey) []nats.Option {
	nk, err := nkeyPublic(priv.Public().(ed25519.PublicKey))
	if err != nil {
		panic(err)
	}
	sign := func(nonce []byte) ([]byte, error) { return ed25519.Sign(priv, nonce), nil }
	opts := []nats.Option{nats.Nkey(nk, sign)}
	if handle != "" {
		opts = append(opts, nats.UserInfo(handle, ""), nats.CustomInboxPrefix("_INBOX."+handle))
	}
	return opts
}

// login connects as u with its kez key.
func login(t testing.TB, url string, u user, extra ...nats.Option) *nats.Conn {
	t.Helper()
	opts := append(kezLogin(u.handle, u.priv), nats.PermissionErrOnSubscribe(true))
	return connect(t, url, append(opts, extra...)...)
}

// natsPublisher is the broker's publish step for the core: the stored message
// JSON on the recipient's inbox with its seq in Kez-Seq.
type natsPublisher struct{ nc *nats.Conn }

func (p natsPublisher) Publish(_ context.Context, m store.Message) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return err
	}
	msg := nats.NewMsg(protocol.InboxPrefix + m.To)
	msg.Header.Set("Kez-Seq", strconv.FormatInt(m.Seq, 10))
	msg.Data = bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return p.nc.PublishMsg(msg)
}

func (p natsPublisher) Flush(ctx context.Context) error { return p.nc.FlushWithContext(ctx) }

// core is the send path wired to the store and to kezd's own NATS connection.
func core(t testing.TB, db *sqlite.DB, app *nats.Conn) *chat.Service {
	t.Helper()
	return chat.New(chat.Config{}, db, natsPublisher{app}, nil, quietLog())
}

func send(t testing.TB, svc *chat.Service, from, to, id, envelope string) protocol.SendResult {
	t.Helper()
	body := fmt.Sprintf(`{"to":%q,"id":%q,"envelope":%s}`, to, id, envelope)
	res, err := svc.Send(context.Background(), from, []byte(body))
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	return res
}

func nextMsg(t testing.TB, sub *nats.Subscription) *nats.Msg {
	t.Helper()
	m, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("next message on %s: %v", sub.Subject, err)
	}
	return m
}

func nkeyPublic(pub ed25519.PublicKey) (string, error) {
	b, err := nkeys.Encode(nkeys.PrefixByteUser, pub)
	return string(b), err
}
