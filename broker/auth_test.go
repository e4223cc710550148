package broker

import (
	"testing"
	"time"

	"github.com/kez-chat/kezd/protocol"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// calloutKeys are the keys package deploykeys keeps; the test makes fresh ones.
type calloutKeys struct {
	issuer, service, xkey nkeys.KeyPair
}

func newCalloutKeys(t testing.TB) (calloutKeys, *Auth) {
	t.Helper()
	issuer, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	service, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	xkey, err := nkeys.CreateCurveKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub := func(kp nkeys.KeyPair) string {
		p, err := kp.PublicKey()
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	return calloutKeys{issuer, service, xkey},
		&Auth{Issuer: pub(issuer), ServiceUser: pub(service), XKey: pub(xkey), Timeout: 5 * time.Second}
}

// serveCallout answers callout requests as the service user: users named
// "alice" may subscribe to alice's inbox; everyone else is refused. It is the
// smallest responder that proves the server's wiring, not kezd's callout.
func serveCallout(t testing.TB, b *Broker, k calloutKeys) {
	t.Helper()
	servicePub, _ := k.service.PublicKey()
	nc, err := b.Connect(nats.Nkey(servicePub, k.service.Sign))
	if err != nil {
		t.Fatalf("service user connect: %v", err)
	}
	t.Cleanup(nc.Close)
	_, err = nc.QueueSubscribe(CalloutSubject, "kezd", func(msg *nats.Msg) {
		serverXKey := msg.Header.Get("Nats-Server-Xkey")
		data, err := k.xkey.Open(msg.Data, serverXKey)
		if err != nil {
			t.Errorf("open request: %v", err)
			return
		}
		req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
		if err != nil {
			t.Errorf("decode request: %v", err)
			return
		}
		resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
		resp.Audience = req.Server.ID
		if req.ConnectOptions.Username == "alice" {
			uc := jwt.NewUserClaims(req.UserNkey)
			uc.Audience = AccountApp
			uc.Sub.Allow.Add(protocol.InboxSubject("alice"))
			uc.Pub.Deny.Add(">")
			if resp.Jwt, err = uc.Encode(k.issuer); err != nil {
				t.Errorf("encode user: %v", err)
			}
		} else {
			resp.Error = "not alice"
		}
		token, err := resp.Encode(k.issuer)
		if err != nil {
			t.Errorf("encode response: %v", err)
			return
		}
		sealed, err := k.xkey.Seal([]byte(token), serverXKey)
		if err != nil {
			t.Errorf("seal: %v", err)
			return
		}
		msg.Respond(sealed)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
}

func TestEmbeddedAuthCallout(t *testing.T) {
	t.Parallel()
	keys, auth := newCalloutKeys(t)
	b := startBroker(t, Config{Listen: "127.0.0.1:-1", WebSocketListen: "127.0.0.1:-1", Auth: auth})
	serveCallout(t, b, keys)

	// kezd's own connection is in the application account, with the users.
	if err := b.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	alice := connect(t, b.ClientURL(), nats.UserInfo("alice", ""), nats.Nkey(userPub, userKP.Sign))
	sub, err := alice.SubscribeSync(protocol.InboxSubject("alice"))
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), testMessage("alice", 1, `{"hi":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := sub.NextMsg(10 * time.Second); err != nil {
		t.Fatalf("alice did not receive kezd's publish: %v", err)
	}

	// Browsers come in over WebSocket, through the same callout.
	ws := connect(t, b.WebSocketURL(), nats.UserInfo("alice", ""), nats.Nkey(userPub, userKP.Sign))
	if err := ws.Flush(); err != nil {
		t.Fatal(err)
	}

	for name, opts := range map[string][]nats.Option{
		"refused by the callout":                  {nats.UserInfo("mallory", ""), nats.Nkey(userPub, userKP.Sign)},
		"no credentials":                          nil,
		"the internal user with a wrong password": {nats.UserInfo("kezd", "guess")},
	} {
		t.Run(name, func(t *testing.T) {
			nc, err := nats.Connect(b.ClientURL(), append(opts, nats.NoReconnect())...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
		})
	}
}

func TestAuthConfigValidation(t *testing.T) {
	t.Parallel()
	_, good := newCalloutKeys(t)
	for name, mutate := range map[string]func(*Auth){
		"issuer is a user key":    func(a *Auth) { a.Issuer = a.ServiceUser },
		"service is an account":   func(a *Auth) { a.ServiceUser = a.Issuer },
		"xkey is not a curve key": func(a *Auth) { a.XKey = a.Issuer },
		"app user is an account":  func(a *Auth) { a.AppUser = a.Issuer },
	} {
		t.Run(name, func(t *testing.T) {
			a := *good
			mutate(&a)
			if _, _, err := serverOptions(Config{Auth: &a}); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestTopologyInternalUser: without an app user, kezd's own user is the
// internal one, which NewTopology takes only with a name and a password.
func TestTopologyInternalUser(t *testing.T) {
	t.Parallel()
	_, a := newCalloutKeys(t)
	if _, err := NewTopology(*a); err == nil {
		t.Error("accepted no app user and no internal user")
	}
	a.InternalUser, a.InternalPassword = "kezd", "pw"
	topo, err := NewTopology(*a)
	if err != nil {
		t.Fatal(err)
	}
	if users := topo.AuthUsers(); len(users) != 2 || users[0] != a.ServiceUser || users[1] != "kezd" {
		t.Errorf("auth users %v, want the service user and kezd", users)
	}
}
