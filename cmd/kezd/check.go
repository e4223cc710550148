package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kez-chat/kezd/deploykeys"
)

// checkConfig is `kezd check-config [serve flags]`: it validates everything
// `kezd serve` would be given (the same flags and KEZ_* environment), the
// files they name and the key seeds, prints a summary without secrets, and
// exits: 0 when serve would accept it, 2 when not. It connects to nothing.
func checkConfig(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parseServe(args, getenv, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	for _, f := range []struct{ flag, path string }{
		{"nats-creds", cfg.NATS.CredsFile}, {"nats-nkey", cfg.NATS.NkeySeedFile},
		{"nats-ca", cfg.NATS.TLSCA}, {"nats-cert", cfg.NATS.TLSCert}, {"nats-key", cfg.NATS.TLSKey},
	} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return usageError{fmt.Errorf("invalid --%s: %v", f.flag, err)}
		}
		fh.Close()
	}
	keys := "generated in --data-dir on first start"
	if seedsGiven(cfg) {
		if _, err := deploykeys.KeysFromSeeds(cfg.Seeds); err != nil {
			return usageError{fmt.Errorf("invalid --callout-*-seed: %v", err)}
		}
		keys = "from --callout-*-seed"
	}
	store := "sqlite in " + cfg.DataDir
	if cfg.DatabaseURL != "" {
		store = "postgres at " + redactURLs(cfg.DatabaseURL)
	}
	nats := "embedded, client " + cfg.NATS.Listen
	if cfg.NATS.URL != "" {
		nats = "external " + redactURLs(cfg.NATS.URL)
	} else if cfg.NATS.ClusterListen != "" {
		nats += fmt.Sprintf(", cluster %s with %d route(s)", cfg.NATS.ClusterListen, len(cfg.NATS.Routes))
	}
	fmt.Fprintf(stdout, "configuration OK\n  http:   %s (public %s)\n  store:  %s\n  nats:   %s\n  keys:   %s\n  drain:  %s, then shutdown within %s\n",
		cfg.Listen, cfg.PublicURL, store, nats, keys, cfg.DrainDelay, cfg.ShutdownTimeout)
	return nil
}

// redactURLs hides the user information (a password, or a user name alone,
// which NATS reads as a token) and credential-like query values of every
// URL in the comma-separated list s. What does not parse is hidden whole.
func redactURLs(s string) string {
	if s == "" {
		return ""
	}
	const hidden = "xxxxx"
	parts := strings.Split(s, ",")
	for i, part := range parts {
		u, err := url.Parse(strings.TrimSpace(part))
		if err != nil {
			parts[i] = hidden
			continue
		}
		if u.User != nil {
			if _, ok := u.User.Password(); ok {
				u.User = url.UserPassword(u.User.Username(), hidden)
			} else {
				u.User = url.User(hidden)
			}
		}
		if q := u.Query(); len(q) > 0 {
			for k := range q {
				if lk := strings.ToLower(k); strings.Contains(lk, "pass") || strings.Contains(lk, "secret") ||
					strings.Contains(lk, "token") || strings.Contains(lk, "key") {
					q.Set(k, hidden)
				}
			}
			u.RawQuery = q.Encode()
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// healthcheck is `kezd healthcheck [--url URL]`: for a container's health
// check in an image with no shell or curl. It exits 0 when URL answers 200
// within --timeout, 1 otherwise.
func healthcheck(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kezd healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &envFlags{fs: fs, getenv: getenv}
	var target string
	var timeout time.Duration
	e.str(&target, "url", "KEZ_HEALTHCHECK_URL", "http://127.0.0.1:8080/healthz", "URL that must answer 200")
	e.dur(&timeout, "timeout", "KEZ_HEALTHCHECK_TIMEOUT", 3*time.Second, "how long to wait for the answer")
	if err := e.parse(args, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if len(e.errs) > 0 {
		return usageError{e.errs[0]}
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return usageError{fmt.Errorf("invalid --url: %v", err)}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered %s", target, resp.Status)
	}
	fmt.Fprintln(stdout, "healthy")
	return nil
}
