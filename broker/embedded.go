package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startEmbedded builds the server options from cfg, starts the server and
// returns it with the options kezd's own connection needs to log in. It
// waits for the server to be ready until ctx ends, 10 s at most.
func startEmbedded(ctx context.Context, cfg Config, log *slog.Logger, routes *routeWatch) (*server.Server, []nats.Option, error) {
	opts, internal, err := serverOptions(cfg)
	if err != nil {
		return nil, nil, err
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("embedded nats: %w", err)
	}
	fatal := make(chan string, 1)
	srv.SetLogger(serverLogger{log: log.With("nats_server", true), fatal: fatal, routes: routes, clients: newClientErrorLog()}, false, false)
	srv.Start()
	// A server that cannot start (its port is taken) says so in a fatal
	// log line and never becomes ready: report that at once, not a timeout.
	for deadline := time.Now().Add(10 * time.Second); !srv.ReadyForConnections(50 * time.Millisecond); {
		select {
		case msg := <-fatal:
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, nil, fmt.Errorf("embedded nats: %s", msg)
		case <-ctx.Done():
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, nil, fmt.Errorf("embedded nats: not ready: %w", ctx.Err())
		default:
		}
		if time.Now().After(deadline) {
			srv.Shutdown()
			srv.WaitForShutdown()
			return nil, nil, errors.New("embedded nats: not ready after 10s")
		}
	}
	if addr := srv.ClusterAddr(); addr != nil {
		log.Info("nats cluster listening", "addr", addr.String(), "routes", redactURL(strings.Join(cfg.Routes, ",")))
	}
	return srv, internal, nil
}

// serverOptions translates cfg into nats-server options. It does no I/O
// beyond reading random bytes for a generated password.
func serverOptions(cfg Config) (*server.Options, []nats.Option, error) {
	opts := &server.Options{
		ServerName: cfg.ServerName,
		NoSigs:     true, // kezd's main owns the signals
		// The largest message anyone needs: a send request (clients) or a
		// stored message (kezd's publishes), both under MaxSendBody. The
		// callout's user JWTs cannot carry a per-user payload limit:
		// nats-server does not apply a callout JWT's limits.
		MaxPayload: maxPayload,
	}
	if cfg.Listen == "" || cfg.Listen == "off" {
		opts.DontListen = true
	} else {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			return nil, nil, fmt.Errorf("nats listen: %w", err)
		}
		opts.Host, opts.Port = host, port
	}
	if cfg.ClusterListen != "" {
		if opts.DontListen {
			// nats-server starts routing only once its client listener is up.
			return nil, nil, errors.New("a clustered embedded nats needs a client listen address")
		}
		host, port, err := splitHostPort(cfg.ClusterListen)
		if err != nil {
			return nil, nil, fmt.Errorf("nats cluster listen: %w", err)
		}
		opts.Cluster.Host, opts.Cluster.Port = host, port
		opts.Cluster.Name = cfg.ClusterName
		c := Cluster{User: cfg.ClusterUser, Password: cfg.ClusterPassword, Routes: cfg.Routes}
		if err := c.apply(opts); err != nil {
			return nil, nil, err
		}
	} else if len(cfg.Routes) > 0 {
		return nil, nil, errors.New("nats routes need a cluster listen address")
	}
	if cfg.WebSocketListen != "" {
		host, port, err := splitHostPort(cfg.WebSocketListen)
		if err != nil {
			return nil, nil, fmt.Errorf("nats websocket listen: %w", err)
		}
		opts.Websocket.Host, opts.Websocket.Port = host, port
		opts.Websocket.NoTLS = true
		opts.Websocket.AllowedOrigins = cfg.WebSocketAllowedOrigins
	}
	if cfg.Auth == nil {
		return opts, nil, nil
	}
	internal, err := configureAuth(opts, *cfg.Auth)
	if err != nil {
		return nil, nil, err
	}
	return opts, internal, nil
}

// configureAuth sets opts up as Topology describes for a: the accounts, the
// service and kezd's own user, and the auth callout. See the auth-callout
// notes: AuthCallout.Account must be set explicitly, the system account must
// stay enabled, and the nonce must always be sent so that kez keys can sign
// it. It returns the options kezd's connection logs in with when it uses the
// internal user (no a.AppUser).
func configureAuth(opts *server.Options, a Auth) ([]nats.Option, error) {
	var connect []nats.Option
	if a.AppUser == "" {
		if a.InternalUser == "" {
			a.InternalUser = "kezd"
		}
		if a.InternalPassword == "" {
			var b [24]byte
			if _, err := rand.Read(b[:]); err != nil {
				return nil, fmt.Errorf("nats auth: internal password: %w", err)
			}
			a.InternalPassword = hex.EncodeToString(b[:])
		}
		connect = []nats.Option{nats.UserInfo(a.InternalUser, a.InternalPassword)}
	}
	t, err := NewTopology(a)
	if err != nil {
		return nil, err
	}
	t.apply(opts)
	return connect, nil
}

// apply sets the accounts, users, callout and auth timeout of t in opts.
func (t Topology) apply(opts *server.Options) {
	for _, a := range t.Accounts {
		acc := server.NewAccount(a.Name)
		opts.Accounts = append(opts.Accounts, acc)
		for _, u := range a.Users {
			var perms *server.Permissions
			if len(u.Publish) > 0 || len(u.Subscribe) > 0 {
				perms = &server.Permissions{}
				if len(u.Publish) > 0 {
					perms.Publish = &server.SubjectPermission{Allow: u.Publish}
				}
				if len(u.Subscribe) > 0 {
					perms.Subscribe = &server.SubjectPermission{Allow: u.Subscribe}
				}
			}
			if u.Nkey != "" {
				opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: u.Nkey, Account: acc, Permissions: perms})
			} else {
				opts.Users = append(opts.Users, &server.User{Username: u.Name, Password: u.Password, Account: acc, Permissions: perms})
			}
		}
	}
	opts.SystemAccount = t.SystemAccount
	opts.AuthCallout = &server.AuthCallout{
		Issuer:    t.Callout.Issuer,
		Account:   t.Callout.Account,
		AuthUsers: t.AuthUsers(),
		XKey:      t.Callout.XKey,
	}
	opts.AlwaysEnableNonce = true
	if t.Timeout > 0 {
		opts.AuthTimeout = t.Timeout.Seconds()
	}
}

// splitHostPort parses "host:port"; port 0 or -1 asks for a free one (to
// nats-server, 0 would mean its default port).
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < -1 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	return host, port, nil
}

// maxPayload is the embedded server's max_payload.
const maxPayload = 128 << 10

// serverLogger sends the embedded server's log to slog. The server logs why
// a callout refused a client; that reason never reaches the client.
type serverLogger struct {
	log     *slog.Logger
	fatal   chan<- string // the first fatal message, if anyone listens
	routes  *routeWatch
	clients *clientErrorLog
}

func (l serverLogger) Noticef(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	// By the prefix, as in Errorf: a client may name itself anything.
	if kind, _ := lineConn(msg); kind == "rid" && strings.HasSuffix(msg, " - Route connection created") {
		l.routes.connected()
	}
	l.log.Info(msg)
}
func (l serverLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	switch {
	case strings.HasPrefix(msg, "Auth callout service returned an error"):
		l.log.Debug(msg) // a refusal the callout logs (summarised) itself
		return
	case strings.HasPrefix(msg, "Could not register auth callout user"):
		// The connection closed while its login was decided: its client
		// went, or kezd closed it (a login of a key being retired).
		l.log.Debug(msg)
		return
	}
	l.log.Warn(msg)
}
func (l serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l serverLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	// A client's lines hold what it chose (its user name): what a line is
	// about is in its prefix, else any client could fail readiness.
	kind, _ := lineConn(msg)
	switch {
	case l.routes == nil:
		// No watch to summarise route trouble: log it as it comes.
	case kind == "rid" && (strings.Contains(msg, "Authorization Violation") || strings.Contains(msg, "authentication error")):
		l.routes.refused()
		l.log.Debug(msg)
		return
	case kind == "" && strings.HasPrefix(msg, "Error trying to connect to route"):
		// About once a second per peer while one is down: summarised.
		l.routes.dialFailed(msg)
		l.log.Debug(msg)
		return
	}
	if strings.Contains(msg, " - authentication error") {
		// One per refused login: the callout logs refusals, summarised,
		// so that a flood of bad logins cannot flood the log.
		l.log.Debug(msg)
		return
	}
	if remoteClientLine(msg) {
		// One per bad connection, and anyone can open one: what the
		// remote side did wrong, summarised.
		l.clients.log(l.log, msg)
		return
	}
	l.log.Error(msg)
}
func (l serverLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l serverLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
