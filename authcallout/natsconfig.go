package authcallout

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/deploykeys"
)

// NATSConfigOptions says what WriteNATSConfig renders.
type NATSConfigOptions struct {
	// Keys are the deployment's public keys (Keys.Public).
	Keys deploykeys.PublicKeys
	// AuthAccount holds the callout service user; default broker.AccountAuth.
	AuthAccount string
	// AppAccount holds kezd's own user and every logged-in client; default
	// broker.AccountApp.
	AppAccount string
	// SystemAccount is nats-server's system account; default broker.AccountSystem.
	SystemAccount string
	// AuthTimeout, when set, is the server's auth timeout: how long a login,
	// callout round trip included, may take. Zero keeps the server's default.
	AuthTimeout time.Duration
}

// BrokerAuth is kezd's NATS auth setup for the deployment's public keys:
// what kezd serve gives its embedded server (broker.Config.Auth), and what
// WriteNATSConfig prints for an external one. Which key plays which part is
// said here only.
func BrokerAuth(k deploykeys.PublicKeys) *broker.Auth {
	return &broker.Auth{Issuer: k.Issuer, XKey: k.XKey, ServiceUser: k.Service, AppUser: k.App}
}

// WriteNATSConfig writes the accounts and auth_callout part of a nats-server
// configuration matching opts.Keys, for an external nats-server to include
// (deploy/nats has the single-server and cluster files that include it): the
// topology the embedded server runs (broker.NewTopology), as text. With it,
// the server:
//   - trusts opts.Keys.Issuer for callout responses and user JWTs;
//   - places the callout service user (opts.Keys.Service) in the auth
//     account, allowed only to answer $SYS.REQ.USER.AUTH;
//   - places kezd's own user (opts.Keys.App) in the application account;
//   - lets both bypass the callout and sends everyone else to it, sealed to
//     opts.Keys.XKey. Because nkey users are configured, the server sends
//     every client a nonce, which the kez login signs.
func WriteNATSConfig(w io.Writer, opts NATSConfigOptions) error {
	k := opts.Keys
	if k.XKey == "" || k.App == "" {
		// Requests carry client credentials; kezd's own connection needs a user.
		return errors.New("nats config: the xkey and kezd's app user are required")
	}
	a := BrokerAuth(k)
	a.Timeout = opts.AuthTimeout
	t, err := broker.NewTopology(*a)
	if err != nil {
		return fmt.Errorf("nats config: %w", err)
	}
	t = t.WithAccountNames(cmp.Or(opts.AuthAccount, broker.AccountAuth), cmp.Or(opts.AppAccount, broker.AccountApp),
		cmp.Or(opts.SystemAccount, broker.AccountSystem))
	return t.WriteConfig(w)
}

// ClusterConfigOptions says what WriteClusterConfig renders.
type ClusterConfigOptions struct {
	// User is the route user; default deploykeys.RouteUser.
	User string
	// Password is the route password, normally Keys.RoutePassword.
	Password string
	// Routes are the cluster's route URLs (nats://host:6222); each gets User
	// and Password. Listing every node, the server's own included, lets all
	// nodes share one file: a server drops a route to itself.
	Routes []string
}

// WriteClusterConfig writes the part of a nats-server cluster {} block that
// makes the routes authenticate: an authorization block that refuses any
// route not presenting opts.User and opts.Password, and opts.Routes carrying
// them. It is the cluster part of the topology the embedded servers run
// (broker.Cluster), as text. Without it, anyone reaching a node's route port
// joins the cluster and sees every account's messages.
func WriteClusterConfig(w io.Writer, opts ClusterConfigOptions) error {
	c := broker.Cluster{User: cmp.Or(opts.User, deploykeys.RouteUser), Password: opts.Password, Routes: opts.Routes}
	return c.WriteConfig(w)
}
