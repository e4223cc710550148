package main

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/ratelimit"
)

func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

func TestParseServeDefaults(t *testing.T) {
	t.Parallel()
	c, err := parseServe(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != ":8080" || c.DataDir != "./kez-data" || c.Chat.Skew != 120*time.Second ||
		c.NATS.Listen != "127.0.0.1:4222" || c.DatabaseURL != "" || c.HTTP.PingInterval != 15*time.Second ||
		c.AdminListen != "127.0.0.1:9090" || !c.RateLimits || c.Limits[ratelimit.Sends] != ratelimit.Defaults[ratelimit.Sends] {
		t.Fatalf("defaults = %+v", c)
	}
	if got := c.PublicURL.String(); got != "http://localhost:8080" {
		t.Fatalf("derived public URL = %q", got)
	}
}

func TestParseServeEnvAndFlags(t *testing.T) {
	t.Parallel()
	c, err := parseServe([]string{"--auth-skew", "30s"}, env(map[string]string{
		"KEZ_LISTEN":       "127.0.0.1:9000",
		"KEZ_AUTH_SKEW":    "10s",
		"KEZ_PUBLIC_URL":   "https://chat.example.org/",
		"KEZ_DATABASE_URL": "postgres://u@h/db",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9000" || c.Chat.Skew != 30*time.Second || c.DatabaseURL != "postgres://u@h/db" {
		t.Fatalf("config = %+v", c)
	}
	if c.PublicURL.Host != "chat.example.org" || !c.PublicURLSet {
		t.Fatalf("public URL = %v", c.PublicURL)
	}
}

func TestParseServeLimits(t *testing.T) {
	t.Parallel()
	c, err := parseServe(nil, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Chat.Quota.Messages != 100_000 || c.Chat.Quota.Bytes != 512<<20 || c.Chat.Retention != 30*24*time.Hour ||
		c.Chat.StreamPageBytes != 256<<10 || c.Chat.CatchUpBudget != 64<<20 || c.Chat.CatchUpWait != 10*time.Second || c.Chat.DrainTimeout != 10*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
	c, err = parseServe([]string{"--inbox-max-bytes", "1GiB", "--retention", "0"}, env(map[string]string{
		"KEZ_INBOX_MAX_MESSAGES":   "0",
		"KEZ_INBOX_MAX_BYTES":      "64KiB", // the flag wins
		"KEZ_STREAM_PAGE_BYTES":    "1MiB",
		"KEZ_CATCH_UP_BUDGET":      "268435456",
		"KEZ_STREAM_DRAIN_TIMEOUT": "30s",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.Chat.Quota.Messages != 0 || c.Chat.Quota.Bytes != 1<<30 || c.Chat.Retention != 0 ||
		c.Chat.StreamPageBytes != 1<<20 || c.Chat.CatchUpBudget != 256<<20 || c.Chat.DrainTimeout != 30*time.Second {
		t.Fatalf("config = %+v", c)
	}
}

func TestParseServeRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  map[string]string
		flag string // the flag the one-line error must name
	}{
		{"bad skew", []string{"--auth-skew", "soon"}, nil, "auth-skew"},
		{"negative skew", []string{"--auth-skew", "-1s"}, nil, "auth-skew"},
		{"bad skew env", nil, map[string]string{"KEZ_AUTH_SKEW": "x"}, "auth-skew"},
		{"listen", []string{"--listen", "8080"}, nil, "listen"},
		{"database", []string{"--database-url", "mysql://x"}, nil, "database-url"},
		{"public url", []string{"--public-url", "ftp://x"}, nil, "public-url"},
		{"nats listen", []string{"--nats-listen", "nowhere"}, nil, "nats-listen"},
		{"routes without cluster", []string{"--nats-routes", "nats://a:1"}, nil, "nats-routes"},
		{"bad route", []string{"--nats-cluster-listen", ":6222", "--nats-routes", "http://a"}, nil, "nats-routes"},
		{"route password without cluster", nil, map[string]string{"KEZ_NATS_CLUSTER_PASSWORD": "p"}, "nats-cluster-password"},
		{"route user without cluster", []string{"--nats-cluster-user", "u"}, nil, "nats-cluster-user"},
		{"log level", []string{"--log-level", "loud"}, nil, "log-level"},
		{"ttl", []string{"--nats-user-ttl", "1s"}, nil, "nats-user-ttl"},
		{"system user without password", []string{"--nats-url", "nats://a:1", "--nats-system-user", "sys"}, nil, "nats-system-user"},
		{"system user without external nats", []string{"--nats-system-user", "sys"}, map[string]string{"KEZ_NATS_SYSTEM_PASSWORD": "p"}, "nats-system-user"},
		{"extra arg", []string{"extra"}, nil, "extra"},
		{"max streams", []string{"--max-streams", "0"}, nil, "max-streams"},
		{"per-handle cap below the protocol's floor", []string{"--max-streams-per-handle", "7"}, nil, "max-streams-per-handle"},
		{"max streams env", nil, map[string]string{"KEZ_MAX_STREAMS": "lots"}, "max-streams"},
		{"negative inbox messages", []string{"--inbox-max-messages", "-1"}, nil, "inbox-max-messages"},
		{"inbox bytes below an envelope", []string{"--inbox-max-bytes", "1KiB"}, nil, "inbox-max-bytes"},
		{"inbox bytes unit", []string{"--inbox-max-bytes", "5TB"}, nil, "inbox-max-bytes"},
		{"inbox bytes env", nil, map[string]string{"KEZ_INBOX_MAX_BYTES": "lots"}, "inbox-max-bytes"},
		{"negative retention", []string{"--retention", "-1h"}, nil, "retention"},
		{"stream page below an envelope", []string{"--stream-page-bytes", "1000"}, nil, "stream-page-bytes"},
		{"budget below a page", []string{"--catch-up-budget", "128KiB"}, nil, "catch-up-budget"},
		{"catch-up wait", []string{"--catch-up-wait", "0s"}, nil, "catch-up-wait"},
		{"drain timeout", []string{"--stream-drain-timeout", "0s"}, nil, "stream-drain-timeout"},
		{"ping below the clients' floor", []string{"--sse-ping", "50ms"}, nil, "sse-ping"},
		{"ping above the clients' ceiling", []string{"--sse-ping", "15m"}, nil, "sse-ping"},
		{"admin listen", []string{"--admin-listen", "9090"}, nil, "admin-listen"},
		{"rate limits switch", nil, map[string]string{"KEZ_RATE_LIMITS": "maybe"}, "rate-limits"},
		{"rate limit syntax", []string{"--rate-sends", "10"}, nil, "rate-sends"},
		{"pair bytes below an envelope", []string{"--rate-pair-bytes", "1KiB/1s"}, nil, "rate-pair-bytes"},
		{"trusted proxy", []string{"--trusted-proxies", "10.0.0.0/8,proxy.example"}, nil, "trusted-proxies"},
		{"polls per ip", []string{"--max-polls-per-ip", "0"}, nil, "max-polls-per-ip"},
		{"websocket origin with a path", []string{"--nats-websocket-origins", "https://a.example/app"}, nil, "nats-websocket-origins"},
		{"websocket origin without a scheme", []string{"--nats-websocket-origins", "a.example"}, nil, "nats-websocket-origins"},
		{"websocket origins: * and more", []string{"--nats-websocket-origins", "*,https://a.example"}, nil, "nats-websocket-origins"},
		{"webfinger alias with a scheme", []string{"--webfinger-aliases", "https://example.org"}, nil, "webfinger-aliases"},
		{"webfinger alias with a user", []string{"--webfinger-aliases", "a@example.org"}, nil, "webfinger-aliases"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := parseServe(tt.args, env(tt.env), io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, tt.flag) {
				t.Fatalf("error %q: want one line naming %q", msg, tt.flag)
			}
		})
	}
}

func TestParseServeRouteErrorHidesPassword(t *testing.T) {
	t.Parallel()
	for _, r := range []string{"http://kezd-route:hunter2@a:6222", "nats://kezd-route:hunter2@[::1"} {
		_, err := parseServe([]string{"--nats-cluster-listen", ":6222", "--nats-routes", r}, env(nil), io.Discard)
		if err == nil || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("route %q: error %v", r, err)
		}
	}
}

// secretVars are, per subcommand, the environment variables it reads that
// hold a secret or may (a URL can carry a password: compose puts the
// database's in KEZ_DATABASE_URL).
var secretVars = map[string][]string{
	"serve":        serveSecretVars,
	"check-config": serveSecretVars,
	"nats-config": {"KEZ_DATABASE_URL", "KEZ_NATS_CLUSTER_ROUTES", "KEZ_NATS_CLUSTER_PASSWORD",
		"KEZ_CALLOUT_ISSUER_SEED", "KEZ_CALLOUT_XKEY_SEED", "KEZ_CALLOUT_SERVICE_SEED", "KEZ_CALLOUT_APP_SEED"},
}

var serveSecretVars = []string{"KEZ_DATABASE_URL", "KEZ_NATS_URL", "KEZ_NATS_ROUTES",
	"KEZ_NATS_PASSWORD", "KEZ_NATS_SYSTEM_PASSWORD", "KEZ_NATS_TOKEN", "KEZ_NATS_CLUSTER_PASSWORD",
	"KEZ_CALLOUT_ISSUER_SEED", "KEZ_CALLOUT_XKEY_SEED", "KEZ_CALLOUT_SERVICE_SEED", "KEZ_CALLOUT_APP_SEED"}

// TestSecretsStayOutOfHelp: no subcommand's -h prints a secret from the
// environment as a flag's default, though it names the variable.
func TestSecretsStayOutOfHelp(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3tpw"
	value := func(name string) string {
		switch {
		case name == "KEZ_DATABASE_URL":
			return "postgres://kez:" + secret + "@db:5432/kez"
		case strings.HasSuffix(name, "_URL"), strings.HasSuffix(name, "_ROUTES"):
			return "nats://kez:" + secret + "@peer:6222"
		}
		return secret
	}
	for cmd, vars := range secretVars {
		for _, name := range vars {
			t.Run(cmd+"/"+name, func(t *testing.T) {
				t.Parallel()
				var help strings.Builder
				err := run(t.Context(), []string{cmd, "-h"}, env(map[string]string{name: value(name)}), io.Discard, &help)
				if !errors.Is(err, flag.ErrHelp) {
					t.Fatalf("%s -h returned %v, want flag.ErrHelp", cmd, err)
				}
				if strings.Contains(help.String(), secret) {
					t.Fatalf("%s -h shows %s:\n%s", cmd, name, help.String())
				}
				if !strings.Contains(help.String(), "["+name+"]") {
					t.Fatalf("%s -h does not name %s:\n%s", cmd, name, help.String())
				}
			})
		}
	}
}

// TestSecretsFromEnvironment: the secrets -h hides are still read from the
// environment, and a flag wins over it.
func TestSecretsFromEnvironment(t *testing.T) {
	t.Parallel()
	vars := map[string]string{
		"KEZ_DATABASE_URL":        "postgres://kez:s3cr3tpw@db:5432/kez",
		"KEZ_NATS_URL":            "nats://kez:s3cr3tpw@nats:4222",
		"KEZ_NATS_USER":           "u",
		"KEZ_NATS_PASSWORD":       "hunter2",
		"KEZ_CALLOUT_ISSUER_SEED": "SAVERYSECRETSEED",
	}
	c, err := parseServe(nil, env(vars), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.DatabaseURL != vars["KEZ_DATABASE_URL"] || c.NATS.URL != vars["KEZ_NATS_URL"] ||
		c.NATS.Password != "hunter2" || c.Seeds.Issuer != vars["KEZ_CALLOUT_ISSUER_SEED"] {
		t.Fatalf("secrets from the environment not applied: %+v", c)
	}
	routes := "nats://route:s3cr3tpw@peer:6222"
	c, err = parseServe([]string{"--nats-cluster-listen", "127.0.0.1:6222"}, env(map[string]string{"KEZ_NATS_ROUTES": routes}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.NATS.Routes) != 1 || c.NATS.Routes[0] != routes {
		t.Fatalf("routes from the environment not applied: %q", c.NATS.Routes)
	}
	// A flag wins over the environment.
	c, err = parseServe([]string{"--nats-password", "flagged"}, env(vars), io.Discard)
	if err != nil || c.NATS.Password != "flagged" {
		t.Fatalf("flag did not win: %v %q", err, c.NATS.Password)
	}
}

func TestParseServeWebFingerAliases(t *testing.T) {
	t.Parallel()
	c, err := parseServe(nil, env(map[string]string{"KEZ_WEBFINGER_ALIASES": "Example.org, kez.example:8443,"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.HTTP.WebFingerAliases, " ") != "example.org kez.example:8443" {
		t.Fatalf("aliases = %q", c.HTTP.WebFingerAliases)
	}
}
