package broker

import (
	"errors"
	"time"

	"github.com/nats-io/nkeys"
)

// The NATS topology kezd runs on, the embedded server's and the one
// "kezd nats-config" prints for an external server alike: three accounts,
// the callout service's user and what it may do, and the callout subject.
// Both are built from Topology, and nothing else spells these names.
const (
	// AccountSystem is the system account.
	AccountSystem = "SYS"
	// AccountAuth holds the auth-callout service user; callout requests go there.
	AccountAuth = "AUTH"
	// AccountApp is the application account: kezd's own connection and every
	// kez user. A callout's user JWT must have this as its audience.
	AccountApp = "APP"
)

// CalloutSubject is where the server sends authorization requests (in
// AccountAuth); nats-server lets no user of that account publish to it.
const CalloutSubject = "$SYS.REQ.USER.AUTH"

// CalloutReplies is where the callout service answers: the server's
// requests carry a reply subject under it.
const CalloutReplies = "$SYS._INBOX.>"

// Topology is the one description of kezd's NATS with the auth callout: the
// accounts, the users configured in them with what each may do, and the
// callout's settings. The embedded server's options (Start, with
// Config.Auth) and the configuration "kezd nats-config" prints for an
// external server (WriteConfig) are both made from it and from nothing
// else, so that they cannot differ. Its route part, for clustered servers,
// is Cluster, made into options and printed the same way.
//
// Every configured user logs in without the callout (each is one of its
// auth users, see AuthUsers); every other login goes to the callout, which
// places it in AppAccount with PROTOCOL.md's permissions. Every client is
// sent a nonce to sign, which a kez login needs: the embedded server is told
// so, and a configuration with nkey users does so by itself.
type Topology struct {
	// Accounts are the accounts, in the order a configuration lists them.
	Accounts []Account
	// AppAccount names the account kezd's own user is in and logged-in
	// clients are placed in (the user JWTs' audience).
	AppAccount string
	// SystemAccount names the system account; the callout needs it enabled.
	SystemAccount string
	// Callout says who answers the logins of users not configured here.
	Callout Callout
	// Timeout is the server's auth timeout: how long a login, callout round
	// trip included, may take. Zero keeps the server's default.
	Timeout time.Duration
}

// Account is an account and the users configured in it.
type Account struct {
	Name string
	// Doc says what the account is for; a printed configuration says it
	// in a comment.
	Doc   string
	Users []User
}

// User is a user configured in the server.
type User struct {
	// Nkey is the user's public nkey ("U…"). A user without one is the
	// embedded server's internal user, with Name and Password, which only
	// kezd's own process knows and no configuration prints.
	Nkey           string
	Name, Password string
	// Publish and Subscribe are the subjects the user may publish and
	// subscribe to; none allows every subject.
	Publish, Subscribe []string
}

// Callout is where the servers send authorization requests, and whose
// answers they trust.
type Callout struct {
	// Issuer is the account public nkey ("A…") that signs callout responses
	// and the user JWTs in them.
	Issuer string
	// Account is the account requests are sent in, on CalloutSubject.
	Account string
	// XKey, when set, is the curve public key ("X…") requests are sealed to.
	XKey string
}

// NewTopology is kezd's topology for a deployment's public keys (see Auth):
//   - AccountAuth holds the callout service user (a.ServiceUser), which may
//     only take requests on CalloutSubject and answer them under
//     CalloutReplies;
//   - AccountApp holds kezd's own user (a.AppUser, or the internal user
//     a.InternalUser with a.InternalPassword, which must then be set);
//   - AccountSystem is the system account;
//   - the callout trusts a.Issuer, is asked in AccountAuth and, with a.XKey,
//     sealed to it.
func NewTopology(a Auth) (Topology, error) {
	if !nkeys.IsValidPublicAccountKey(a.Issuer) {
		return Topology{}, errors.New("nats auth: issuer must be an account public nkey (A…)")
	}
	if !nkeys.IsValidPublicUserKey(a.ServiceUser) {
		return Topology{}, errors.New("nats auth: service user must be a user public nkey (U…)")
	}
	if a.XKey != "" && !nkeys.IsValidPublicCurveKey(a.XKey) {
		return Topology{}, errors.New("nats auth: xkey must be a curve public key (X…)")
	}
	app := User{Nkey: a.AppUser}
	switch {
	case a.AppUser != "" && !nkeys.IsValidPublicUserKey(a.AppUser):
		return Topology{}, errors.New("nats auth: app user must be a user public nkey (U…)")
	case a.AppUser == "" && (a.InternalUser == "" || a.InternalPassword == ""):
		return Topology{}, errors.New("nats auth: without an app user, the internal user needs a name and a password")
	case a.AppUser == "":
		app = User{Name: a.InternalUser, Password: a.InternalPassword}
	}
	return Topology{
		Accounts: []Account{
			{
				Name: AccountAuth,
				Doc: "The callout service logs in here. nats-server denies every user of this\n" +
					"account publishing to " + CalloutSubject + ", so only servers ask.",
				Users: []User{{Nkey: a.ServiceUser, Publish: []string{CalloutReplies}, Subscribe: []string{CalloutSubject}}},
			},
			{
				Name:  AccountApp,
				Doc:   "kezd itself and every client logged in through the callout.",
				Users: []User{app},
			},
			{Name: AccountSystem},
		},
		AppAccount:    AccountApp,
		SystemAccount: AccountSystem,
		Callout:       Callout{Issuer: a.Issuer, Account: AccountAuth, XKey: a.XKey},
		Timeout:       a.Timeout,
	}, nil
}

// WithAccountNames is t with its auth, application and system accounts
// renamed, everywhere t names them.
func (t Topology) WithAccountNames(auth, app, system string) Topology {
	rename := map[string]string{t.Callout.Account: auth, t.AppAccount: app, t.SystemAccount: system}
	accounts := make([]Account, len(t.Accounts))
	for i, a := range t.Accounts {
		if n, ok := rename[a.Name]; ok {
			a.Name = n
		}
		accounts[i] = a
	}
	t.Accounts = accounts
	t.Callout.Account, t.AppAccount, t.SystemAccount = auth, app, system
	return t
}

// AuthUsers are the users that bypass the callout: every configured one, by
// nkey or name.
func (t Topology) AuthUsers() []string {
	var users []string
	for _, a := range t.Accounts {
		for _, u := range a.Users {
			if u.Nkey != "" {
				users = append(users, u.Nkey)
			} else {
				users = append(users, u.Name)
			}
		}
	}
	return users
}
