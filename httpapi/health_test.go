package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/protocol"
)

func TestHealth(t *testing.T) {
	brokerDown := errors.New("broker down")
	e := newEnv(t, openSQLite(t))
	failing := newEnv(t, openSQLite(t), func(c *Config) {
		c.Ready = append(c.Ready, Check{Name: "broker", Fn: func(context.Context) error { return brokerDown }})
	})

	e.do(http.MethodGet, "/healthz", nil, nil).want(t, http.StatusOK)
	failing.do(http.MethodGet, "/healthz", nil, nil).want(t, http.StatusOK)

	r := e.do(http.MethodGet, "/readyz", nil, nil)
	r.want(t, http.StatusOK)
	if !strings.Contains(string(r.body), `"store":"ok"`) {
		t.Fatalf("readyz body %s", r.body)
	}

	r = failing.do(http.MethodGet, "/readyz", nil, nil)
	r.wantError(t, http.StatusServiceUnavailable, protocol.CodeUnavailable)
	if !strings.Contains(string(r.body), "broker") || strings.Contains(string(r.body), "store") {
		t.Fatalf("readyz body %s should name the broker, and only it", r.body)
	}
	if strings.Contains(string(r.body), brokerDown.Error()) {
		t.Fatalf("readyz body %s leaks the check's error", r.body)
	}

	t.Run("closed store", func(t *testing.T) {
		st := openSQLite(t)
		e := newEnv(t, st)
		st.(interface{ Close() error }).Close()
		e.do(http.MethodGet, "/readyz", nil, nil).wantError(t, http.StatusServiceUnavailable, protocol.CodeUnavailable)
	})
}

func TestMetrics(t *testing.T) {
	var failures float64 = 3
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.Metrics = []Metric{{Name: "kezd_publish_failures_total", Help: "h", Counter: true, Value: func() float64 { return failures }}}
	})
	bob := newUser(t, "bob")
	e.register(bob)
	e.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)

	r := e.do(http.MethodGet, "/metrics", nil, nil)
	r.want(t, http.StatusOK)
	for _, want := range []string{
		"# TYPE kezd_streams_open gauge\nkezd_streams_open 1\n",
		"# TYPE kezd_publish_failures_total counter\nkezd_publish_failures_total 3\n",
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("metrics lack %q:\n%s", want, r.body)
		}
	}
}
