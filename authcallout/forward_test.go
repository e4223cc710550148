package authcallout_test

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/internal/testwait"
)

// startCluster starts two instances' embedded servers, clustered, with the
// auth callout as their authorization, and waits for their route.
func startCluster(t *testing.T, k deploykeys.Keys) (a, b *broker.Broker) {
	t.Helper()
	start := func(routes ...string) *broker.Broker {
		auth := authcallout.BrokerAuth(public(t, k))
		auth.Timeout = authTimeout
		return brokertest.Start(t, broker.Config{Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterName: "kez",
			ClusterUser: "kezd-route", ClusterPassword: "0123456789abcdef-route-secret", Routes: routes,
			Auth: auth, Options: []nats.Option{k.AppUser()}}, nil)
	}
	a = start()
	b = start(a.ClusterURL())
	for _, s := range []*broker.Broker{a, b} {
		testwait.Until(t, "the two servers to form a cluster", func() bool { return s.Server().NumRoutes() > 0 })
	}
	return a, b
}

// With two instances' embedded servers clustered, every login on A's server
// is decided by A's callout, which alone sees that server's connections
// (defect: the servers' queue group gave about half of them to B's callout,
// which could not count them, so they passed the cap): with a cap of 1, the
// first login on A is admitted and the next 8 are all refused, and B's
// callout, which received some of the requests, decided none.
func TestLoginDecidedByItsServersInstance(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	a, b := startCluster(t, k)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	callout := func(on *broker.Broker) *authcallout.Service {
		return startCallout(t, on.ClientURL(), k, db, authcallout.Config{MaxConnsPerHandle: 1, Conns: on, ServerID: on.ServerID(), Peers: on.Conn()})
	}
	onA, onB := callout(a), callout(b)
	// B's callout must be in the queue group as seen from A's server, and
	// A's forwarded requests' subscription known to B's.
	auth, err := a.Server().LookupAccount(broker.AccountAuth)
	if err != nil {
		t.Fatal(err)
	}
	app, err := b.Server().LookupAccount(broker.AccountApp)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "B's callout subscription to reach A's server", func() bool { return auth.Interest(broker.CalloutSubject) > 1 })
	testwait.Until(t, "A's forwarding subscription to reach B's server", func() bool {
		return app.Interest(authcallout.ForwardSubject(a.ServerID())) > 0
	})

	login(t, a.ClientURL(), alice, nats.IgnoreDiscoveredServers())
	const more = 8
	for i := range more {
		// Only A: nats.go would try a refused login again on the servers
		// A's INFO names.
		nc, err := nats.Connect(a.ClientURL(), append(kezLogin("alice", alice.priv), nats.IgnoreDiscoveredServers())...)
		if err == nil {
			nc.Close()
			t.Fatalf("login %d on A passed the cap of 1", i+2)
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("login %d: %v, want an authorization violation", i+2, err)
		}
	}
	if st := onA.Stats(); st.Authorized != 1 || st.Rejected != more {
		t.Errorf("A's callout: %+v, want 1 authorized and %d rejected", st, more)
	}
	if st := onB.Stats(); st.Authorized+st.Rejected+st.Dropped != 0 {
		t.Errorf("B's callout decided logins of A's server: %+v", st)
	}
	if st := onA.Stats(); st.CapRefused != more || st.Forwarded != 0 {
		t.Errorf("A's callout: %+v, want %d refused at the cap and none forwarded", st, more)
	}
}

// A request passed on to an instance that does not take it (here a peer
// that never answers) is answered here while the server still waits, with
// nats-server's default auth timeout, which kezd's embedded server keeps
// (defect: the wait for the peer was 2 s, that timeout, so the fallback
// answer came after the server had refused the login).
func TestForwardNotTakenAnsweredInTime(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	// No Timeout: the server's default, as kezd serve's embedded server.
	a := brokertest.Start(t, broker.Config{Listen: "127.0.0.1:-1", Auth: authcallout.BrokerAuth(public(t, k)),
		Options: []nats.Option{k.AppUser()}}, nil)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")

	// The slow instance said to run a's server: it receives, never answers.
	peer := connect(t, a.ClientURL(), k.AppUser())
	received := make(chan struct{}, 1)
	if _, err := peer.Subscribe(authcallout.ForwardSubject(a.ServerID()), func(*nats.Msg) {
		select {
		case received <- struct{}{}:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	// This callout runs another server, so it passes a's requests on.
	svc := startCallout(t, a.ClientURL(), k, db, authcallout.Config{ServerID: "ANOTHERSERVER", Peers: a.Conn(), Conns: a})

	login(t, a.ClientURL(), alice, nats.IgnoreDiscoveredServers())
	select {
	case <-received:
	case <-time.After(10 * time.Second):
		t.Fatal("the login was never passed on to the peer")
	}
	if st := svc.Stats(); st.Authorized != 1 || st.Forwarded != 0 {
		t.Errorf("callout: %+v, want 1 authorized here and none forwarded", st)
	}
}

// A request with less time left than the fallback needs is answered where
// it arrived, not passed on: here the callout's clock runs an hour ahead,
// so every request has expired by it, and the peer, which takes requests
// but never answers them, would leave the login unanswered.
func TestForwardSkippedWithoutTimeLeft(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	auth := authcallout.BrokerAuth(public(t, k))
	auth.Timeout = authTimeout
	a := brokertest.Start(t, broker.Config{Listen: "127.0.0.1:-1", Auth: auth, Options: []nats.Option{k.AppUser()}}, nil)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")

	peer := connect(t, a.ClientURL(), k.AppUser())
	if _, err := peer.Subscribe(authcallout.ForwardSubject(a.ServerID()), func(m *nats.Msg) { _ = m.Respond(nil) }); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	ahead := func() time.Time { return time.Now().Add(time.Hour) }
	svc := startCallout(t, a.ClientURL(), k, db, authcallout.Config{ServerID: "ANOTHERSERVER", Peers: a.Conn(), Conns: a, Now: ahead})

	login(t, a.ClientURL(), alice, nats.IgnoreDiscoveredServers(), nats.Timeout(authTimeout))
	if st := svc.Stats(); st.Authorized != 1 || st.Forwarded != 0 {
		t.Errorf("callout: %+v, want 1 authorized here and none forwarded", st)
	}
}

// While every slot for waiting on other instances is taken (as by workers
// waiting on a slow one), a request of another instance's server is passed
// on to it without waiting: with the server's reply subject, but no reply
// of its own, so that no worker is held up by it.
func TestForwardWithoutWaitingWhileWaitsTaken(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	auth := authcallout.BrokerAuth(public(t, k))
	auth.Timeout = 3 * time.Second // enough to forward; nobody answers the login
	a := brokertest.Start(t, broker.Config{Listen: "127.0.0.1:-1", Auth: auth, Options: []nats.Option{k.AppUser()}}, nil)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")

	peer := connect(t, a.ClientURL(), k.AppUser())
	got := make(chan *nats.Msg, 1)
	if _, err := peer.Subscribe(authcallout.ForwardSubject(a.ServerID()), func(m *nats.Msg) {
		select {
		case got <- m:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := peer.Flush(); err != nil {
		t.Fatal(err)
	}
	svc := startCallout(t, a.ClientURL(), k, db, authcallout.Config{ServerID: "ANOTHERSERVER", Peers: a.Conn(), Conns: a, Workers: 2})
	t.Cleanup(authcallout.HoldForwardWaits(svc))

	if nc, err := nats.Connect(a.ClientURL(), append(kezLogin("alice", alice.priv), nats.IgnoreDiscoveredServers())...); err == nil {
		nc.Close()
		t.Fatal("logged in, though the peer answers nothing and this callout passed the login on")
	}
	var m *nats.Msg
	select {
	case m = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the login was never passed on to the peer")
	}
	if m.Reply != "" || !strings.HasPrefix(m.Header.Get("Kez-Callout-Reply"), "$SYS._INBOX.") {
		t.Errorf("passed on with reply %q and server reply %q; want none, and the server's", m.Reply, m.Header.Get("Kez-Callout-Reply"))
	}
	if st := svc.Stats(); st.Forwarded != 1 || st.Authorized+st.Rejected != 0 {
		t.Errorf("callout: %+v, want 1 forwarded and none decided here", st)
	}
}

// A login that one instance's callout answered for another instance's
// embedded server (when that instance did not take it in time) is closed
// by a revocation of its key all the same: the callout that recorded it
// asks the instance running the server to close it (defect: it could not
// close it itself, and the login lived for its JWT unless it was set up by
// the time that instance listed the handle's connections).
func TestRevokedLoginClosedOnAnotherInstancesServer(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	a, b := startCluster(t, k)
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	callout := func(on *broker.Broker) *authcallout.Service {
		return startCallout(t, on.ClientURL(), k, db, authcallout.Config{Conns: on, ServerID: on.ServerID(), Peers: on.Conn(), Kicker: on})
	}
	onA, _ := callout(a), callout(b)
	app, err := a.Server().LookupAccount(broker.AccountApp)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "B's kick subscription to reach A's server", func() bool {
		return app.Interest(authcallout.KickSubject(b.ServerID())) > 0
	})

	nc := login(t, b.ClientURL(), alice, nats.IgnoreDiscoveredServers(), nats.NoReconnect())
	conns, err := b.Server().Connz(&server.ConnzOptions{Username: true, User: "alice"})
	if err != nil || len(conns.Conns) != 1 {
		t.Fatalf("alice's connections on B: %v, %v; want one", conns, err)
	}
	// As if A's callout had answered this login of B's server.
	key := hex.EncodeToString(alice.pub())
	authcallout.RecordLogin(onA, key, b.ServerID(), conns.Conns[0].Cid)
	onA.Revoked(chat.Revocation{Handle: "alice", Keys: []string{key}})
	testwait.Until(t, "alice's login on B to be closed", nc.IsClosed)
}
