package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/httpapi"
	"github.com/kez-chat/kezd/natsapi"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store/postgres"
	"github.com/kez-chat/kezd/store/sqlite"
	"github.com/kez-chat/kezd/web"
	"github.com/nats-io/nats.go"
)

// backend is what serve needs from either store.
type backend interface {
	chat.Store
	authcallout.HandleLookup
	secretStore
	Ping(ctx context.Context) error
	Close() error
}

// started tells a caller (a test) where a serving kezd can be reached.
type started struct {
	HTTPURL  string // base URL of the HTTP API
	AdminURL string // base URL of the admin listener ("" when off)
	NATSURL  string // client URL of the NATS kezd uses ("" when not exposed)
	Broker   *broker.Broker
}

// serve runs kezd until ctx ends, then shuts down in order: stop accepting
// HTTP and end streams, let in-flight requests finish, stop the NATS
// responders, drain NATS and shut the embedded server, give back the NATS
// logins' leases, close the store.
// Each step's undoing is deferred as it starts, so they run in reverse.
func serve(ctx context.Context, cfg config, logOut io.Writer, onStart func(started)) (err error) {
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel}))

	st, err := openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
		}
	}()
	var shared secretStore
	if cfg.DatabaseURL != "" {
		shared = st
	}
	keys, err := deploymentKeys(ctx, cfg, shared, log)
	if err != nil {
		return err
	}
	pub, err := keys.Public()
	if err != nil {
		return fmt.Errorf("nats keys: %w", err)
	}

	// Listen first: the public URL, derived from --listen, needs the port
	// actually bound (":0" in tests), and the NATS WebSocket's default
	// allowed origin is the public URL's.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on --listen %s: %w", cfg.Listen, err)
	}
	defer ln.Close() // Serve closes it too; this covers returning before Serve
	publicURL := *cfg.PublicURL
	if !cfg.PublicURLSet {
		publicURL.Host = net.JoinHostPort(publicURL.Hostname(), strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	}

	bcfg, err := brokerConfig(cfg, keys, pub, publicURL)
	if err != nil {
		return err
	}
	b, err := broker.Start(ctx, bcfg, log.With("component", "nats"))
	if err != nil {
		return fmt.Errorf("start nats (--nats-listen, --nats-cluster-listen, --nats-url): %w", err)
	}
	// The callout's NATS logins give back their leases once the broker has
	// closed their connections (the next step), not before: else other
	// instances could admit more while they are still open.
	var callout *authcallout.Service
	defer func() {
		if callout != nil {
			callout.ReleaseLeases()
		}
	}()
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if cerr := b.Close(sctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close nats: %w", cerr))
		}
	}()

	// The background loops that need the store stop before it closes, not
	// when ctx ends; retention stops with ctx.
	limits := newLimiter(cfg, st)
	defer goUntilStopped(context.WithoutCancel(ctx), limits.Run)()
	// With Postgres, the stream and long-poll caps per handle and per IP,
	// and the NATS connections per handle, hold for the deployment: this
	// instance renews its leases.
	var sharedCaps httpapi.SharedCaps
	ccfg := cfg.Callout
	if db, ok := st.(*postgres.DB); ok {
		leases := postgres.NewLeases(db, 0, log.With("component", "stream_leases"))
		defer goUntilStopped(context.WithoutCancel(ctx), leases.Run)()
		sharedCaps, ccfg.Leases = leases, leases
	}

	// The callout service has its own connection, as the service user in the
	// auth account; kezd's own connection lives in the application account.
	calloutConn, err := b.Connect(keys.ServiceUser(), nats.Name("kezd-auth-callout"), nats.MaxReconnects(-1))
	if err != nil {
		if cfg.NATS.URL != "" {
			return fmt.Errorf("connect auth callout service to --nats-url (is the server configured with the output of `kezd nats-config` for these keys?): %w", err)
		}
		return fmt.Errorf("connect auth callout service: %w", err)
	}
	defer calloutConn.Close()
	ccfg.Keys, ccfg.Conns, ccfg.Kicker, ccfg.Limits = keys, b, b, limits
	ccfg.ServerID, ccfg.Peers = b.ServerID(), b.Conn()
	ccfg.TrustedProxies = cfg.HTTP.TrustedProxies
	callout, err = authcallout.Start(ctx, calloutConn, ccfg, st, log.With("component", "auth_callout"))
	if err != nil {
		return fmt.Errorf("start auth callout: %w", err)
	}
	defer callout.Stop()

	core := cfg.Chat
	core.Limits = limits
	svc := chat.New(core, st, b, b, log.With("component", "chat"))
	defer goUntilStopped(ctx, svc.RunRetention)()
	// The outbox confirms this instance's publishes and republishes what no
	// instance confirmed; it stops after the HTTP server (the last sends
	// are confirmed) and before NATS and the store close.
	defer goUntilStopped(context.WithoutCancel(ctx), svc.RunOutbox)()

	// Revocations announced by any instance (this one included) end (the
	// broker, first) the NATS connections logged in as the handle, the NATS
	// logins of retired keys that this instance's callout granted but their
	// server may not have set up yet, and then the sessions of those keys
	// here, which needs the store: the NATS closes do not wait for it.
	stopRevocations, err := b.OnRevocation(func(rev chat.Revocation) {
		callout.Revoked(rev)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		svc.Revoked(rctx, rev)
	})
	if err != nil {
		return fmt.Errorf("start revocations: %w", err)
	}
	defer stopRevocations()

	sender, err := natsapi.StartSend(ctx, b.Conn(), natsapi.SendConfig{}, svc, log.With("component", "nats_send"))
	if err != nil {
		return fmt.Errorf("start nats send responder: %w", err)
	}
	defer sender.Stop()

	var draining atomic.Bool // set on shutdown for --drain-delay
	hcfg := cfg.HTTP
	hcfg.PublicURL = &publicURL
	hcfg.NATSURL = cmp.Or(cfg.NATSPublicURL, b.ClientURL())
	hcfg.Limits, hcfg.SharedCaps = limits, sharedCaps
	hcfg.Ready = []httpapi.Check{
		{Name: "store", Fn: st.Ping},
		{Name: "nats", Fn: b.Ping},
		{Name: "nats_routes", Fn: b.RoutesRefused},
		{Name: "draining", Fn: func(context.Context) error {
			if draining.Load() {
				return errDraining
			}
			return nil
		}},
	}
	hcfg.Web = web.New(web.Config{ConnectOrigins: []string{publicURL.Scheme + "://" + publicURL.Host}})
	api := httpapi.New(hcfg, svc, log.With("component", "http"))
	srv := api.HTTPServer(cfg.Listen)

	// The operator listener: metrics, off the public listener.
	adminURL := ""
	serveErr := make(chan error, 2)
	if cfg.AdminListen != "off" {
		aln, err := net.Listen("tcp", cfg.AdminListen)
		if err != nil {
			return fmt.Errorf("listen on --admin-listen %s: %w", cfg.AdminListen, err)
		}
		admin := adminServer(newRegistry(metricSources{svc: svc, api: api, callout: callout, limits: limits, broker: b, store: st}))
		go func() {
			if err := admin.Serve(aln); !errors.Is(err, http.ErrServerClosed) {
				serveErr <- fmt.Errorf("admin listener: %w", err)
			}
		}()
		defer admin.Close() // it holds no request worth waiting for
		adminURL = "http://" + aln.Addr().String()
	}
	go func() { serveErr <- srv.Serve(api.AcceptLogger(ln)) }()
	log.Info("kezd serving", "http", ln.Addr().String(), "admin", adminURL, "public_url", publicURL.String(),
		"nats", b.ClientURL(), "store", storeKind(cfg), "version", version())
	if onStart != nil {
		onStart(started{HTTPURL: "http://" + ln.Addr().String(), AdminURL: adminURL, NATSURL: b.ClientURL(), Broker: b})
	}

	return serveUntilDone(ctx, cfg, log, srv, api, &draining, serveErr)
}

// brokerConfig is the NATS configuration as the flags give it, with what
// the deployment's keys and the bound public URL add.
func brokerConfig(cfg config, keys deploykeys.Keys, pub deploykeys.PublicKeys, publicURL url.URL) (broker.Config, error) {
	bcfg := cfg.NATS
	if len(bcfg.WebSocketAllowedOrigins) == 0 && !cfg.NATSWebSocketAnyOrigin {
		bcfg.WebSocketAllowedOrigins = []string{publicURL.Scheme + "://" + publicURL.Host}
	}
	bcfg.Auth = authcallout.BrokerAuth(pub)
	var err error
	if bcfg.MACKey, err = keys.LiveMACKey(); err != nil {
		return broker.Config{}, err
	}
	if bcfg.ClusterListen != "" {
		if bcfg.ClusterUser, bcfg.ClusterPassword, err = routeCredentials(cfg.NATS.ClusterUser, cfg.NATS.ClusterPassword, keys); err != nil {
			return broker.Config{}, err
		}
	}
	if bcfg.URL == "" || !hasExternalCreds(cfg) {
		// kezd's own connection logs in as the deployment's app user: to the
		// embedded server, or to an external one configured by `kezd nats-config`.
		bcfg.Options = []nats.Option{keys.AppUser()}
	}
	return bcfg, nil
}

// goUntilStopped runs fn in a goroutine until ctx ends or the returned
// stop is called; stop waits for fn to return.
func goUntilStopped(ctx context.Context, fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); fn(ctx) }()
	return func() { cancel(); <-done }
}

// serveUntilDone waits for ctx to end (or the HTTP server to fail), drains
// for --drain-delay, then stops accepting, ends open streams and
// long-polls, and waits up to --shutdown-timeout for in-flight requests;
// serve's deferred steps (NATS, the store) follow it.
func serveUntilDone(ctx context.Context, cfg config, log *slog.Logger, srv *http.Server, api *httpapi.Server, draining *atomic.Bool, serveErr <-chan error) error {
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-serveErr:
		return fmt.Errorf("http server: %w", err)
	}
	if cfg.DrainDelay > 0 {
		// Keep serving, but say not ready and close each connection after
		// its response, so that a load balancer moves away before the
		// listener closes and no request is sent on a connection closing
		// under it.
		// Logged once it holds: whoever reads the line (an operator, a
		// test) may rely on /readyz saying so.
		draining.Store(true)
		srv.SetKeepAlivesEnabled(false)
		log.Info("draining before shutdown", "for", cfg.DrainDelay)
		select {
		case <-time.After(cfg.DrainDelay):
		case err := <-serveErr:
			return fmt.Errorf("http server: %w", err)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	shutdownErr := srv.Shutdown(sctx)
	if shutdownErr != nil {
		// Requests are still running past the grace period; end the streams
		// anyway, and give them a moment before NATS and the store close.
		api.CloseStreams()
		wctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		sctx = wctx
	}
	if err := api.WaitStreams(sctx); err != nil {
		return errors.Join(shutdownErr, fmt.Errorf("waiting for streams: %w", err))
	}
	if shutdownErr != nil {
		return fmt.Errorf("http shutdown: %w", shutdownErr)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	return nil
}

// newLimiter returns the deployment's rate limits, or nil (off). With
// Postgres the buckets are shared by every instance on the database; the
// embedded SQLite store is one machine, whose buckets are its own.
func newLimiter(cfg config, st backend) *ratelimit.Limiter {
	if !cfg.RateLimits {
		return nil
	}
	rc := ratelimit.Config{Limits: cfg.Limits}
	if shared, ok := st.(ratelimit.Shared); ok && cfg.DatabaseURL != "" {
		rc.Shared = shared
	}
	return ratelimit.New(rc)
}

// errDraining is /readyz's answer while an instance drains before shutdown.
var errDraining = errors.New("draining: shutting down")

// routeCredentials are what the embedded NATS servers of a deployment
// present to each other on their routes: the given user and password, each
// defaulting to one every instance sharing the keys derives alike.
func routeCredentials(user, password string, keys deploykeys.Keys) (string, string, error) {
	if user == "" {
		user = deploykeys.RouteUser
	}
	if password == "" {
		var err error
		if password, err = keys.RoutePassword(); err != nil {
			return "", "", fmt.Errorf("nats route password: %w", err)
		}
	}
	return user, password, nil
}

func hasExternalCreds(cfg config) bool {
	return cfg.NATS.CredsFile != "" || cfg.NATS.NkeySeedFile != "" || cfg.NATS.User != "" || cfg.NATS.Token != ""
}

func storeKind(cfg config) string {
	if cfg.DatabaseURL != "" {
		return "postgres"
	}
	return "sqlite"
}

func openStore(ctx context.Context, cfg config, log *slog.Logger) (backend, error) {
	if cfg.DatabaseURL != "" {
		db, err := postgres.Open(ctx, postgres.Config{URL: cfg.DatabaseURL}, log.With("component", "store"))
		if err != nil {
			return nil, fmt.Errorf("open postgres (--database-url): %w", err)
		}
		return db, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create --data-dir: %w", err)
	}
	db, err := sqlite.Open(ctx, filepath.Join(cfg.DataDir, "kez.db"))
	if err != nil {
		return nil, fmt.Errorf("open embedded store in --data-dir %s: %w", cfg.DataDir, err)
	}
	return db, nil
}

// secretStore keeps secrets every instance sharing the database agrees on.
type secretStore interface {
	SharedSecret(ctx context.Context, name, candidate string) (string, error)
}

// natsKeysSecret names the deployment's NATS key seeds in the store.
const natsKeysSecret = "nats-keys"

// deploymentKeys are the deployment's NATS keys: from flags when given;
// with Postgres (shared not nil), the ones kept in the database, which the
// first instance to start stores (its data dir's keys if it has some, else
// new ones), so that instances on one database agree without sharing a
// folder; otherwise from (or newly into) the data dir.
func deploymentKeys(ctx context.Context, cfg config, shared secretStore, log *slog.Logger) (deploykeys.Keys, error) {
	if shared == nil || seedsGiven(cfg) {
		return loadKeys(cfg)
	}
	dir := filepath.Join(cfg.DataDir, "nats-keys")
	var candidate deploykeys.Keys
	_, err := os.Stat(filepath.Join(dir, "nats-issuer.nk"))
	fromDir := err == nil
	if fromDir {
		candidate, err = deploykeys.LoadOrCreateKeys(dir)
	} else {
		candidate, err = deploykeys.GenerateKeys()
	}
	if err != nil {
		return deploykeys.Keys{}, fmt.Errorf("nats keys: %w", err)
	}
	seeds, err := candidate.Seeds()
	if err != nil {
		return deploykeys.Keys{}, err
	}
	raw, err := json.Marshal(seeds)
	if err != nil {
		return deploykeys.Keys{}, err
	}
	stored, err := shared.SharedSecret(ctx, natsKeysSecret, string(raw))
	if err != nil {
		return deploykeys.Keys{}, fmt.Errorf("nats keys in the database: %w", err)
	}
	var got deploykeys.Seeds
	if err := json.Unmarshal([]byte(stored), &got); err != nil {
		return deploykeys.Keys{}, errors.New("nats keys in the database: not a set of seeds")
	}
	keys, err := deploykeys.KeysFromSeeds(got)
	if err != nil {
		return deploykeys.Keys{}, fmt.Errorf("nats keys in the database: %w", err)
	}
	switch {
	case got == seeds && fromDir:
		log.Info("nats keys: the data dir's are the deployment's, kept in the database")
	case got == seeds:
		log.Info("nats keys: created for the deployment and kept in the database")
	case fromDir:
		log.Warn("nats keys: using the deployment's keys from the database; the ones in the data dir differ and are ignored", "dir", dir)
	}
	return keys, nil
}

func seedsGiven(cfg config) bool {
	return cfg.Seeds != (deploykeys.Seeds{})
}

// loadKeys takes the deployment's NATS keys from flags when given, else from
// (or newly into) the data dir. Every instance of a deployment must share them.
func loadKeys(cfg config) (deploykeys.Keys, error) {
	if seedsGiven(cfg) {
		k, err := deploykeys.KeysFromSeeds(cfg.Seeds)
		if err != nil {
			return deploykeys.Keys{}, fmt.Errorf("invalid --callout-*-seed: %w", err)
		}
		return k, nil
	}
	k, err := deploykeys.LoadOrCreateKeys(filepath.Join(cfg.DataDir, "nats-keys"))
	if err != nil {
		return deploykeys.Keys{}, fmt.Errorf("nats keys in --data-dir: %w", err)
	}
	return k, nil
}
