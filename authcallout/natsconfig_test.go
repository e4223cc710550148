package authcallout_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/deploykeys"
)

func TestWriteNATSConfig(t *testing.T) {
	t.Parallel()
	p := public(t, testKeys(t))
	var buf bytes.Buffer
	if err := authcallout.WriteNATSConfig(&buf, authcallout.NATSConfigOptions{Keys: p}); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{p.Issuer, p.XKey, p.Service, p.App, "account: AUTH", "system_account: SYS"} {
		if !strings.Contains(out, want) {
			t.Errorf("config lacks %q", want)
		}
	}
	if strings.Contains(out, "SA") && strings.Contains(out, "\"S") {
		t.Error("config contains a seed")
	}
	bad := []authcallout.NATSConfigOptions{
		{Keys: deploykeys.PublicKeys{Issuer: p.Service, XKey: p.XKey, Service: p.Service, App: p.App}},
		{Keys: p, AppAccount: "AUTH"},
		{Keys: p, AppAccount: "APP }\nSYS {"},
	}
	for _, o := range bad {
		if err := authcallout.WriteNATSConfig(&bytes.Buffer{}, o); err == nil {
			t.Errorf("accepted %+v", o)
		}
	}
}

// TestNATSConfigExample: the shipped auth.conf.example is what the command
// prints (with a 5 s auth timeout), its keys replaced by placeholders.
func TestNATSConfigExample(t *testing.T) {
	t.Parallel()
	p := public(t, testKeys(t))
	var buf bytes.Buffer
	if err := authcallout.WriteNATSConfig(&buf, authcallout.NATSConfigOptions{Keys: p, AuthTimeout: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	got := strings.NewReplacer(
		p.Issuer, "A_ISSUER_PUBLIC_KEY_FROM_KEZD_NATS_CONFIG",
		p.XKey, "X_XKEY_PUBLIC_KEY_FROM_KEZD_NATS_CONFIG",
		p.Service, "U_SERVICE_USER_PUBLIC_KEY_FROM_KEZD_NATS_CONFIG",
		p.App, "U_APP_USER_PUBLIC_KEY_FROM_KEZD_NATS_CONFIG",
	).Replace(buf.String())
	example, err := os.ReadFile(filepath.Join("..", "deploy", "nats", "auth.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(example) {
		t.Errorf("output differs from auth.conf.example:\n%s", got)
	}
}

func TestWriteClusterConfig(t *testing.T) {
	t.Parallel()
	const placeholder = "ROUTE_PASSWORD_FROM_KEZD_NATS_CONFIG"
	var buf bytes.Buffer
	err := authcallout.WriteClusterConfig(&buf, authcallout.ClusterConfigOptions{
		Password: placeholder,
		Routes:   []string{"nats://kez-nats-1:6222", "nats://kez-nats-2:6222", "nats://kez-nats-3:6222"},
	})
	if err != nil {
		t.Fatal(err)
	}
	// The shipped example is exactly what the command prints.
	example, err := os.ReadFile(filepath.Join("..", "deploy", "nats", "cluster", "cluster-auth.conf.example"))
	if err != nil {
		t.Fatal(err)
	}
	if buf.String() != string(example) {
		t.Errorf("output differs from cluster-auth.conf.example:\n%s", buf.String())
	}

	const secret = "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		opts authcallout.ClusterConfigOptions
	}{
		{"no password", authcallout.ClusterConfigOptions{}},
		{"short password", authcallout.ClusterConfigOptions{Password: "short"}},
		{"quote in password", authcallout.ClusterConfigOptions{Password: secret + `"`}},
		{"variable in password", authcallout.ClusterConfigOptions{Password: secret + "$X"}},
		{"quote in user", authcallout.ClusterConfigOptions{User: `a"b`, Password: secret}},
		{"route with credentials", authcallout.ClusterConfigOptions{Password: secret, Routes: []string{"nats://u:routesecret@h:6222"}}},
		{"route without port", authcallout.ClusterConfigOptions{Password: secret, Routes: []string{"nats://h"}}},
		{"not a route", authcallout.ClusterConfigOptions{Password: secret, Routes: []string{"http://h:6222"}}},
		{"route breaking out", authcallout.ClusterConfigOptions{Password: secret, Routes: []string{"nats://h:6222/\"]\nx"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := authcallout.WriteClusterConfig(&bytes.Buffer{}, tt.opts)
			if err == nil {
				t.Fatal("accepted")
			}
			if tt.opts.Password != "" && strings.Contains(err.Error(), tt.opts.Password) {
				t.Errorf("error echoes the password: %v", err)
			}
			if strings.Contains(err.Error(), "routesecret") {
				t.Errorf("error echoes a route's password: %v", err)
			}
		})
	}
}
