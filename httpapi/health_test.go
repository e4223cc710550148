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

// The public listener serves no metrics: they are the operator's, on the
// admin listener (cmd/kezd). What they report is counted here.
func TestMetricsNotPublic(t *testing.T) {
	e := newEnv(t, openSQLite(t))
	bob := newUser(t, "bob")
	e.register(bob)
	e.openStream(streamPath(bob, "bob", ""), nil).wantReady(0)
	e.do(http.MethodGet, "/metrics", nil, nil).wantError(t, http.StatusNotFound, codeNotFound)
	if n := e.srv.OpenStreams(); n != 1 {
		t.Fatalf("OpenStreams = %d, want 1", n)
	}
}
