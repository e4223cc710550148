package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// Metrics are served by the Prometheus client on the admin listener, not
// on the public one (defect: /metrics was on the public listener, which
// listens on every interface by default), and count rate-limit refusals.
func TestAdminListenerServesMetrics(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--rate-registrations", "1/1000h")
	ctx := t.Context()
	c, _ := client.New(s.HTTPURL, client.WithAttempts(1))
	kezdtest.Register(t, ctx, c, "alice")
	bob, _ := envelope.Generate("bob")
	if _, err := c.Register(ctx, bob); !client.IsCode(err, protocol.CodeRateLimited) {
		t.Fatalf("second registration: %v, want rate_limited", err)
	}

	if code, _ := get(t, s.HTTPURL+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("public GET /metrics = %d, want 404", code)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := get(t, s.HTTPURL+path); code != http.StatusOK {
			t.Fatalf("public GET %s = %d, want 200", path, code)
		}
	}
	code, body := get(t, s.AdminURL+"/metrics")
	if code != http.StatusOK {
		t.Fatalf("admin GET /metrics = %d", code)
	}
	for _, want := range []string{
		"# TYPE kezd_streams_open gauge\nkezd_streams_open 0\n",
		`kezd_rate_limited_total{limit="registrations_per_ip"} 1` + "\n",
		`kezd_rate_limited_total{limit="streams_per_ip"} 0` + "\n",
		"# TYPE kezd_nats_logins_authorized_total counter\n",
		"# TYPE kezd_publish_failures_total counter\n",
		"kezd_live_rejected_total 0\n",
		"go_goroutines ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
}

func TestAdminListenOff(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--admin-listen", "off")
	if s.AdminURL != "" {
		t.Fatalf("AdminURL %q with --admin-listen off", s.AdminURL)
	}
}
