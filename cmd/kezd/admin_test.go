package main

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store/pgtest"
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

// On Postgres the metrics also count the store's batching: group-commit
// transactions and their appends, point reads and their queries. The
// embedded store batches nothing and reports none of them.
func TestAdminMetricsCountStoreBatching(t *testing.T) {
	t.Parallel()
	metric := func(body, name string) float64 {
		t.Helper()
		for _, line := range strings.Split(body, "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				return f
			}
		}
		t.Fatalf("metrics lack %s:\n%s", name, body)
		return 0
	}
	s := startServe(t, "--database-url", pgtest.NewDatabase(t), "--data-dir", t.TempDir())
	ctx := t.Context()
	c, err := client.New(s.HTTPURL)
	if err != nil {
		t.Fatal(err)
	}
	alice := kezdtest.Register(t, ctx, c, "alice")
	kezdtest.Register(t, ctx, c, "bob")
	for i := range 3 {
		if _, err := c.Send(ctx, alice, "bob", fmt.Appendf(nil, "hi %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	_, body := get(t, s.AdminURL+"/metrics")
	if n := metric(body, "kezd_store_commit_appends_total"); n != 3 {
		t.Errorf("kezd_store_commit_appends_total %v after 3 sends, want 3", n)
	}
	if n := metric(body, "kezd_store_commit_batches_total"); n < 1 || n > 3 {
		t.Errorf("kezd_store_commit_batches_total %v for 3 appends", n)
	}
	reads, queries := metric(body, "kezd_store_point_reads_total"), metric(body, "kezd_store_point_read_queries_total")
	if reads < 1 || queries < 1 || queries > reads {
		t.Errorf("%v point reads in %v queries after 3 signed sends", reads, queries)
	}

	_, body = get(t, startServe(t).AdminURL+"/metrics")
	if strings.Contains(body, "kezd_store_") {
		t.Errorf("the embedded store's metrics count batching it does not do:\n%s", body)
	}
}

func TestAdminListenOff(t *testing.T) {
	t.Parallel()
	s := startServe(t, "--admin-listen", "off")
	if s.AdminURL != "" {
		t.Fatalf("AdminURL %q with --admin-listen off", s.AdminURL)
	}
}
