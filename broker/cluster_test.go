package broker

import (
	"errors"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/nats-io/nats-server/v2/server"
)

const (
	testRouteUser     = "kezd-route"
	testRoutePassword = "0123456789abcdef-route-secret"
)

// clusterConfig is an embedded server with a client and a route port on
// loopback, with the test's route credentials, routing to routes.
func clusterConfig(routes ...string) Config {
	return Config{
		Listen:          "127.0.0.1:-1",
		ClusterListen:   "127.0.0.1:-1",
		ClusterName:     "kez",
		ClusterUser:     testRouteUser,
		ClusterPassword: testRoutePassword,
		Routes:          routes,
	}
}

// logLines collects log output and lets a test wait for a line.
type logLines struct {
	mu      sync.Mutex
	text    strings.Builder
	changed chan struct{} // closed and replaced on every write
}

func newLogLines() *logLines { return &logLines{changed: make(chan struct{})} }

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.text.Write(p)
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

func (l *logLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.text.String()
}

// wait returns once the log contains s, or fails the test after a bound.
func (l *logLines) wait(t testing.TB, s string) {
	t.Helper()
	l.waitCount(t, s, 1)
}

// waitCount returns once the log contains s n times, or fails the test
// after a bound.
func (l *logLines) waitCount(t testing.TB, s string, n int) {
	t.Helper()
	deadline := time.After(testwait.Timeout)
	for {
		l.mu.Lock()
		found, changed := strings.Count(l.text.String(), s) >= n, l.changed
		l.mu.Unlock()
		if found {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("log never said %q %d times:\n%s", s, n, l)
		}
	}
}

// startLogged starts a broker whose log (the embedded server's included)
// goes to the returned lines.
func startLogged(t testing.TB, cfg Config) (*Broker, *logLines) {
	t.Helper()
	lines := newLogLines()
	// Registered first, so it runs after the broker's close.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("broker log:\n%s", lines)
		}
	})
	b := startBrokerLog(t, cfg, slog.New(slog.NewTextHandler(lines, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return b, lines
}

// waitRoutes waits until every broker has a route. Route state has no
// event to wait on.
func waitRoutes(t testing.TB, bs ...*Broker) {
	t.Helper()
	for _, b := range bs {
		testwait.Until(t, "a route on every broker", func() bool { return b.Server().NumRoutes() > 0 })
	}
}

// waitNoRoutes waits until numRoutes reports none.
func waitNoRoutes(t testing.TB, numRoutes func() int) {
	t.Helper()
	testwait.Until(t, "the routes to close", func() bool { return numRoutes() == 0 })
}

// startPlainServer runs a bare nats-server that routes to route with no
// credentials of its own, as a stranger reaching the route port would.
func startPlainServer(t testing.TB, route string) (*server.Server, *logLines) {
	t.Helper()
	u, err := url.Parse(route)
	if err != nil {
		t.Fatal(err)
	}
	opts := &server.Options{
		Host:   "127.0.0.1",
		Port:   server.RANDOM_PORT,
		NoSigs: true,
		Cluster: server.ClusterOpts{
			Name: "kez",
			Host: "127.0.0.1",
			Port: server.RANDOM_PORT,
		},
		Routes: []*url.URL{u},
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	lines := newLogLines()
	srv.SetLogger(serverLogger{log: slog.New(slog.NewTextHandler(lines, nil))}, false, false)
	srv.Start()
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("plain nats-server not ready")
	}
	return srv, lines
}

// TestClusterRouteAuth: the route port of a clustered embedded server admits
// only servers presenting the cluster credentials.
func TestClusterRouteAuth(t *testing.T) {
	t.Parallel()
	a, aLog := startLogged(t, clusterConfig())

	withUser := func(user *url.Userinfo) string {
		u, _ := url.Parse(a.ClusterURL())
		u.User = user
		return u.String()
	}
	// Each peer routes to a; a refuses it, which the peer logs.
	refused := []struct {
		name  string
		start func(t *testing.T) (numRoutes func() int, log *logLines)
	}{
		{"no credentials", func(t *testing.T) (func() int, *logLines) {
			srv, log := startPlainServer(t, a.ClusterURL())
			return srv.NumRoutes, log
		}},
		{"wrong password", func(t *testing.T) (func() int, *logLines) {
			cfg := clusterConfig(a.ClusterURL())
			cfg.ClusterPassword = "not-the-password"
			b, log := startLogged(t, cfg)
			return b.Server().NumRoutes, log
		}},
		{"wrong user", func(t *testing.T) (func() int, *logLines) {
			cfg := clusterConfig(a.ClusterURL())
			cfg.ClusterUser = "someone"
			b, log := startLogged(t, cfg)
			return b.Server().NumRoutes, log
		}},
		{"wrong credentials in the route URL", func(t *testing.T) (func() int, *logLines) {
			// User info in a route URL is kept, not replaced by the cluster's.
			b, log := startLogged(t, clusterConfig(withUser(url.UserPassword(testRouteUser, "wrong"))))
			return b.Server().NumRoutes, log
		}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			numRoutes, log := tc.start(t)
			log.wait(t, "Authorization Violation")
			// The peer logs the violation before it drops the route it
			// was setting up, so it may count it for a moment.
			waitNoRoutes(t, numRoutes)
			if n := a.Server().NumRoutes(); n != 0 {
				t.Errorf("a has %d routes after refusing the peer", n)
			}
		})
	}
	if !strings.Contains(aLog.String(), "authentication error") {
		t.Error("a did not log the refusals")
	}

	t.Run("right credentials", func(t *testing.T) {
		b, bLog := startLogged(t, clusterConfig(a.ClusterURL()))
		waitRoutes(t, a, b)
		l := newListener()
		l.subscribe(t, b, "alice")
		waitInterest(t, a, "alice")
		if err := a.Publish(t.Context(), testMessage("alice", 1, `{"via":"a"}`)); err != nil {
			t.Fatal(err)
		}
		if m := recv(t, l.msgs); m.Seq != 1 {
			t.Errorf("got %+v", m)
		}
		for name, log := range map[string]*logLines{"a": aLog, "b": bLog} {
			if strings.Contains(log.String(), testRoutePassword) {
				t.Errorf("%s's log contains the route password", name)
			}
		}
	})
}

func TestClusterNeedsRouteCredentials(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]Config{
		"no user":     {Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterPassword: "p"},
		"no password": {Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:-1", ClusterUser: "u"},
	} {
		t.Run(name, func(t *testing.T) {
			if b, err := Start(t.Context(), cfg, testLogger(t)); err == nil {
				b.Close(t.Context())
				t.Error("Start succeeded")
			}
		})
	}
	// A route that does not parse is reported without its password.
	cfg := clusterConfig("nats://kezd-route:hunter2@[::1")
	if _, err := Start(t.Context(), cfg, testLogger(t)); err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("bad route URL: %v", err)
	}
}

// Only a server that is not clustered makes a subscription reach every
// publisher at once (chat then skips a stream's read a second after setup).
func TestInterestImmediate(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		cfg  Config
		want bool
	}{
		{"in-process only", Config{}, true},
		{"with a client listener", Config{Listen: "127.0.0.1:-1"}, true},
		{"clustered", clusterConfig(), false},
	} {
		if got := startBroker(t, c.cfg).InterestImmediate(); got != c.want {
			t.Errorf("%s: InterestImmediate = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestRefusedRouteReported: instances whose route credentials differ (they
// do not share the deployment's keys) say so in one kezd log line, however
// often the route is retried, and in their readiness.
func TestRefusedRouteReported(t *testing.T) {
	t.Parallel()
	a, aLog := startLogged(t, clusterConfig())
	if err := a.RoutesRefused(t.Context()); err != nil {
		t.Fatalf("a lone server reports %v", err)
	}
	cfg := clusterConfig(a.ClusterURL())
	cfg.ClusterPassword = "another-deployments-password"
	b, bLog := startLogged(t, cfg)
	bLog.wait(t, `msg="nats route failing"`)
	// The route is retried; wait for a second refusal.
	bLog.waitCount(t, "Authorization Violation", 2)
	if n := strings.Count(bLog.String(), `level=WARN msg="nats route failing"`); n != 1 {
		t.Errorf("%d warnings for repeated refusals, want 1:\n%s", n, bLog)
	}
	if !strings.Contains(bLog.String(), "do not share the deployment's NATS keys") {
		t.Errorf("the warning does not say what is wrong:\n%s", bLog)
	}
	for name, br := range map[string]*Broker{"refused": b, "refusing": a} {
		if err := br.RoutesRefused(t.Context()); !errors.Is(err, ErrRoutesRefused) {
			t.Errorf("%s side: RoutesRefused = %v, want ErrRoutesRefused", name, err)
		}
	}
	if strings.Contains(aLog.String(), `level=ERROR`) && strings.Contains(aLog.String(), "rid:") {
		t.Errorf("the refusing side logged route errors at error level:\n%s", aLog)
	}
}

// TestRouteDialErrorsSummarised: a peer that is down is dialled again
// every second; kezd says so once (then in summaries), not every time.
func TestRouteDialErrorsSummarised(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "nats://" + ln.Addr().String()
	ln.Close() // nothing listens there now
	b, log := startLogged(t, clusterConfig(down))
	_ = b
	log.wait(t, `msg="nats route dial failing"`)
	log.waitCount(t, "Error trying to connect to route", 3)
	if n := strings.Count(log.String(), "level=WARN") + strings.Count(log.String(), "level=ERROR"); n != 1 {
		t.Errorf("%d warnings and errors for three failed dials of one peer, want 1:\n%s", n, log)
	}
}
