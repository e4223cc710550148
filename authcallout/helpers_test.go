package authcallout_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/sqlite"
)

// authTimeout is the servers' auth timeout in tests: generous, because under
// -race on two busy cores a callout round trip can take far longer than 1 s.
const authTimeout = 10 * time.Second

func testKeys(t testing.TB) deploykeys.Keys {
	t.Helper()
	k, err := deploykeys.GenerateKeys()
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

// kezNATS is a NATS server set up as kezd sets one up, and kezd's broker on
// it, whose connection is kezd's own user in the application account.
type kezNATS struct {
	srv    *server.Server
	url    string
	broker *broker.Broker
}

// setup is one of the two ways kezd's NATS is set up: the tests of logins
// and permissions run on both.
type setup struct {
	name  string
	start func(t testing.TB, k deploykeys.Keys, timeout time.Duration) kezNATS
}

var (
	embedded   = setup{"embedded", startEmbedded}
	configured = setup{"nats-config", startConfigured}
	setups     = []setup{embedded, configured}
)

// startEmbedded is kezd's embedded server as kezd serve starts it for the
// deployment's keys, listening on a random loopback port.
func startEmbedded(t testing.TB, k deploykeys.Keys, timeout time.Duration) kezNATS {
	t.Helper()
	auth := authcallout.BrokerAuth(public(t, k))
	auth.Timeout = timeout
	b := brokertest.Start(t, broker.Config{Listen: "127.0.0.1:-1", Auth: auth, Options: []nats.Option{k.AppUser()}}, nil)
	return kezNATS{srv: b.Server(), url: b.ClientURL(), broker: b}
}

// startConfigured is a nats-server (in this process) configured by what
// `kezd nats-config` prints for the keys and nothing else but a random
// loopback port, and kezd connected to it as kezd serve --nats-url is.
func startConfigured(t testing.TB, k deploykeys.Keys, timeout time.Duration) kezNATS {
	t.Helper()
	dir := t.TempDir()
	writeAuthConf(t, dir, k, timeout)
	conf := filepath.Join(dir, "nats.conf")
	writeFile(t, conf, "host: 127.0.0.1\nport: -1\ninclude \"auth.conf\"\n")
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoLog, opts.NoSigs = true, true
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
	return kezNATS{srv: s, url: s.ClientURL(), broker: startKezd(t, s.ClientURL(), k)}
}

// startKezd connects kezd's broker to the external NATS at url as kezd
// serve --nats-url does: as the deployment's app user.
func startKezd(t testing.TB, url string, k deploykeys.Keys) *broker.Broker {
	t.Helper()
	return brokertest.Start(t, broker.Config{URL: url, Options: []nats.Option{k.AppUser()}}, nil)
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
	svc, err := authcallout.Start(context.Background(), nc, cfg, lookup, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Stop)
	return svc
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

// core is the send path wired to the store and to kezd's broker, which
// publishes what it stores.
func core(t testing.TB, db *sqlite.DB, b *broker.Broker) *chat.Service {
	t.Helper()
	return chat.New(chat.Config{}, db, b, nil, slog.New(slog.DiscardHandler))
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
