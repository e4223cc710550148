// Package broker owns kezd's NATS: an embedded nats-server (alone, or
// clustered with the embedded servers of other instances) or a connection to
// an external one. It publishes stored messages on kez.chat.inbox.<handle> and
// fans them out to the live streams of this instance (see live.go).
package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Config says which NATS kezd uses. With URL empty kezd embeds a server;
// otherwise it connects to the external NATS at URL with the credentials given.
type Config struct {
	// URL selects external mode: one or more comma-separated NATS URLs.
	URL string
	// External credentials, all optional; paths are files.
	CredsFile    string // a .creds file (user JWT and seed)
	NkeySeedFile string // a file holding a user nkey seed
	User         string
	Password     string
	Token        string
	TLSCA        string // a CA bundle for the server's certificate
	TLSCert      string // a client certificate, with TLSKey
	TLSKey       string
	// SystemUser and SystemPassword, when set, are a user of the external
	// server's system account: kezd then disconnects, through the system
	// account's KICK requests, the NATS logins of keys it revokes. Without
	// them such logins last until their user JWT expires.
	SystemUser     string
	SystemPassword string

	// Listen is the embedded server's client address, "host:port" (port -1
	// picks a free one), or "off" for no listener (kezd still connects in-process).
	// Empty means "off".
	Listen string
	// ClusterListen, when set, opens a route port ("host:port") so the
	// embedded servers of several instances form one cluster. It needs Listen
	// and the route credentials below.
	ClusterListen string
	// Routes are the other servers' route URLs, e.g. nats://10.0.0.2:6222.
	// A route without user info gets ClusterUser and ClusterPassword.
	Routes []string
	// ClusterUser and ClusterPassword are what a server must present to join
	// the cluster through ClusterListen, and what this server presents on its
	// Routes. Both are required with ClusterListen: an open route port would
	// let anyone who reaches it see and inject every account's messages.
	// Every member must use the same pair. Ignored without ClusterListen.
	ClusterUser     string
	ClusterPassword string
	// ClusterName names the cluster; every member must use the same one.
	ClusterName string
	// ServerName names this embedded server; empty lets the server pick.
	ServerName string
	// WebSocketListen, when set, opens a NATS WebSocket listener for
	// browsers ("host:port"). It speaks plain ws://: put TLS in front of it.
	WebSocketListen string
	// WebSocketAllowedOrigins are the origins ("https://chat.example") whose
	// pages may open the WebSocket; a request with another Origin header is
	// refused, one without (a native client) accepted. Empty accepts any
	// origin: kezd passes the public URL's unless told otherwise.
	WebSocketAllowedOrigins []string
	// Auth, when set, configures the embedded server for the auth callout
	// (see Auth). Nil runs an open server with one account (tests, loopback).
	Auth *Auth

	// Options are added to kezd's own connection, after the ones above: for
	// credentials the caller holds as keys rather than files (the
	// deployment's app user, in either mode).
	Options []nats.Option

	// MACKey, when set, is the deployment's key for the MAC on live
	// publishes: Publish adds it, and the live path drops what lacks it
	// (see mac.go). Every instance must use the same key.
	MACKey []byte
}

// Auth is the embedded server's auth-callout setup, from which NewTopology
// makes the topology the server runs (and "kezd nats-config" prints). The
// keys are generated and kept by the caller (package deploykeys); the broker
// only needs their public halves.
type Auth struct {
	// Issuer is the account public nkey ("A…") that signs callout responses.
	Issuer string
	// XKey is the callout service's curve public key ("X…"); when set, the
	// server seals requests to it. Empty sends requests in the clear.
	XKey string
	// ServiceUser is the callout service's user public nkey ("U…"). It lands
	// in AccountAuth, may subscribe to CalloutSubject and publish replies
	// under $SYS._INBOX.>, and bypasses the callout.
	ServiceUser string
	// AppUser, when set, is kezd's own connection as a user public nkey
	// ("U…") in AccountApp with full permissions, bypassing the callout; the
	// caller signs in with Config.Options. Otherwise kezd's connection uses
	// InternalUser and InternalPassword: InternalUser defaults to "kezd", and
	// an empty password is replaced by a random one at Start, which is enough
	// because only this process uses it.
	AppUser          string
	InternalUser     string
	InternalPassword string
	// Timeout bounds a callout answer (the server's auth timeout); zero
	// keeps the server's default.
	Timeout time.Duration
}

// Broker is kezd's NATS. Create it with Start; end it with Close.
type Broker struct {
	log      *slog.Logger
	srv      *server.Server // nil in external mode
	routes   *routeWatch    // the embedded server's route health; nil in external mode
	nc       *nats.Conn
	url      string // external URL, redacted
	rawURL   string // external URL as configured, for Connect
	tlsOpts  []nats.Option
	sys      *nats.Conn // external mode with a system-account user, else nil
	ext      *extConns  // the external servers' connections, through sys; nil without sys
	ws       bool       // the embedded server has a WebSocket listener
	hub      *hub
	macKey   []byte
	closed   chan struct{} // closed by the connection's ClosedHandler
	closeOne sync.Once
}

// LiveRejected counts live messages dropped because kezd did not publish
// them (no valid MAC, or not the stored message JSON).
func (b *Broker) LiveRejected() int64 { return b.hub.rejected.Load() }

// ErrNotConnected reports that the broker connection is not up.
var ErrNotConnected = errors.New("broker: not connected")

// Start starts the embedded server (unless cfg.URL is set) and connects to it
// or to the external NATS. In external mode an unreachable server does not
// fail Start: kezd keeps retrying and Ping reports it. ctx bounds the wait
// for the embedded server to be ready (which is at most 10 s in any case):
// when it ends first, Start shuts the server down and returns ctx's error.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Broker, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start nats: %w", err)
	}
	b := &Broker{log: log, closed: make(chan struct{}), macKey: cfg.MACKey}
	b.hub = newHub(log, cfg.MACKey)
	opts := []nats.Option{
		nats.Name("kezd"),
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
		nats.FlusherTimeout(10 * time.Second),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected; live streams resync from the store", "server", nc.ConnectedServerName())
			b.hub.resyncAll()
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ClosedHandler(func(*nats.Conn) { b.closeOne.Do(func() { close(b.closed) }) }),
		nats.ErrorHandler(b.hub.asyncError),
	}
	if cfg.URL != "" {
		ext, err := externalOptions(cfg)
		if err != nil {
			return nil, err
		}
		b.tlsOpts = tlsOptions(cfg)
		b.url = redactURL(cfg.URL)
		b.rawURL = cfg.URL
		opts = append(opts, ext...)
		opts = append(opts, cfg.Options...)
		opts = append(opts, nats.RetryOnFailedConnect(true))
		nc, err := nats.Connect(cfg.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("connect to nats %s: %w", b.url, err)
		}
		if !nc.IsConnected() {
			log.Warn("nats not reachable yet; retrying in the background", "url", b.url)
		}
		b.nc = nc
		if cfg.SystemUser != "" {
			sysOpts := append([]nats.Option{nats.Name("kezd-system"), nats.MaxReconnects(-1),
				nats.CustomReconnectDelay(reconnectDelay), nats.RetryOnFailedConnect(true),
				nats.UserInfo(cfg.SystemUser, cfg.SystemPassword)}, b.tlsOpts...)
			sys, err := nats.Connect(cfg.URL, sysOpts...)
			if err != nil {
				nc.Close()
				return nil, fmt.Errorf("connect to nats %s as the system user: %w", b.url, err)
			}
			b.sys = sys
			b.ext = &extConns{ask: b.askConnz, log: log, relearn: extConnzRelearn}
		}
	} else {
		b.routes = newRouteWatch(log)
		srv, internal, err := startEmbedded(ctx, cfg, log, b.routes)
		if err != nil {
			return nil, err
		}
		b.srv = srv
		b.ws = cfg.WebSocketListen != ""
		opts = append(opts, nats.InProcessServer(srv))
		opts = append(opts, internal...)
		opts = append(opts, cfg.Options...)
		nc, err := nats.Connect("", opts...)
		if err != nil {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, fmt.Errorf("connect to embedded nats: %w", err)
		}
		b.nc = nc
	}
	if err := b.hub.start(b.nc); err != nil {
		b.shutdown()
		return nil, err
	}
	return b, nil
}

// reconnectDelay backs off exponentially from 50 ms to 5 s, with jitter so
// that the instances of a deployment do not reconnect in lockstep.
func reconnectDelay(attempts int) time.Duration {
	d := 50 * time.Millisecond << min(attempts, 7)
	d = min(d, 5*time.Second)
	return d/2 + rand.N(d/2+1)
}

// externalOptions turns the external credentials into connect options.
func externalOptions(cfg Config) ([]nats.Option, error) {
	var opts []nats.Option
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.NkeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NkeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed file: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.User != "" || cfg.Password != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return nil, errors.New("nats tls: a client certificate needs both cert and key")
	}
	return append(opts, tlsOptions(cfg)...), nil
}

// tlsOptions are the TLS settings every connection to the external NATS uses.
func tlsOptions(cfg Config) []nats.Option {
	var opts []nats.Option
	if cfg.TLSCA != "" {
		opts = append(opts, nats.RootCAs(cfg.TLSCA))
	}
	if cfg.TLSCert != "" && cfg.TLSKey != "" {
		opts = append(opts, nats.ClientCert(cfg.TLSCert, cfg.TLSKey))
	}
	return opts
}

// redactURL drops any user info from a (comma-separated) NATS URL.
func redactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil {
			parts[i] = "(invalid url)"
			continue
		}
		u.User = nil
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// Conn is kezd's own connection (in AccountApp when the callout is on).
func (b *Broker) Conn() *nats.Conn { return b.nc }

// Server is the embedded server, or nil in external mode.
func (b *Broker) Server() *server.Server { return b.srv }

// ClientURL is the URL NATS clients use to reach this broker: the embedded
// server's client listener ("" when it has none), or the external URL
// without credentials.
func (b *Broker) ClientURL() string {
	if b.srv == nil {
		return b.url
	}
	if b.srv.Addr() == nil {
		return ""
	}
	return b.srv.ClientURL()
}

// InterestImmediate reports whether a subscription reaches every publisher
// as soon as Subscribe returns: an embedded server that is not clustered,
// where every publisher (this instance, or another connected to it) is a
// client of the one server. With routes or an external NATS, interest
// reaches the other servers a moment later (see chat.DefaultRecheck).
func (b *Broker) InterestImmediate() bool {
	return b.srv != nil && b.srv.ClusterAddr() == nil
}

// WebSocketURL is the embedded server's WebSocket URL, or "" without one.
func (b *Broker) WebSocketURL() string {
	if b.srv == nil || !b.ws {
		return ""
	}
	return b.srv.WebsocketURL()
}

// ClusterURL is the embedded server's route URL, which other instances list
// in their Routes, or "" when it is not clustered.
func (b *Broker) ClusterURL() string {
	if b.srv == nil {
		return ""
	}
	addr := b.srv.ClusterAddr()
	if addr == nil {
		return ""
	}
	return "nats://" + addr.String()
}

// Connect opens another connection to the same NATS as kezd's own, with the
// caller's options (credentials, name, handlers): in-process to the embedded
// server, or to the external URL with the configured TLS settings. The auth
// callout service connects as its service user this way.
func (b *Broker) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if b.srv != nil {
		return nats.Connect("", append([]nats.Option{nats.InProcessServer(b.srv)}, opts...)...)
	}
	return nats.Connect(b.rawURL, append(append([]nats.Option{}, b.tlsOpts...), opts...)...)
}

// Ping reports whether the broker is usable, for /readyz: the connection is
// up and a round trip to the server completes before ctx ends.
func (b *Broker) Ping(ctx context.Context) error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("%w (%s)", ErrNotConnected, strings.ToLower(b.nc.Status().String()))
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats flush: %w", err)
	}
	return nil
}

// Close drains kezd's connection (delivering what is in flight), then shuts
// the embedded server down. It returns early, closing hard, when ctx ends.
func (b *Broker) Close(ctx context.Context) error {
	var err error
	switch derr := b.nc.Drain(); {
	case derr == nil:
		select {
		case <-b.closed:
		case <-ctx.Done():
			err = fmt.Errorf("drain nats: %w", ctx.Err())
		}
	case errors.Is(derr, nats.ErrConnectionReconnecting), errors.Is(derr, nats.ErrConnectionClosed):
		// Nothing can be drained without a server; close.
	default:
		err = fmt.Errorf("drain nats: %w", derr)
	}
	b.shutdown()
	return err
}

// shutdown closes the connection, stops fan-out and the embedded server.
func (b *Broker) shutdown() {
	if b.sys != nil {
		b.sys.Close()
	}
	b.nc.Close()
	b.hub.stop()
	if b.srv != nil {
		b.srv.Shutdown()
		b.srv.WaitForShutdown()
	}
}
