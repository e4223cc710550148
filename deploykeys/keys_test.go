package deploykeys_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"

	"github.com/kez-chat/kezd/deploykeys"
)

func testKeys(t testing.TB) deploykeys.Keys {
	t.Helper()
	k, err := deploykeys.LoadOrCreateKeys(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func public(t testing.TB, k deploykeys.Keys) deploykeys.PublicKeys {
	t.Helper()
	p, err := k.Public()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadOrCreateKeys(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := deploykeys.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("dir mode %v, %v", fi.Mode().Perm(), err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 4 {
		t.Errorf("files %v, want 4 seed files and nothing else", files)
	}
	for _, f := range files {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v", f, fi.Mode().Perm())
		}
	}
	k2, err := deploykeys.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if public(t, k1) != public(t, k2) {
		t.Error("second start generated new keys")
	}
	p := public(t, k1)
	for _, c := range []struct {
		key string
		ok  func(string) bool
	}{
		{p.Issuer, nkeys.IsValidPublicAccountKey},
		{p.XKey, nkeys.IsValidPublicCurveKey},
		{p.Service, nkeys.IsValidPublicUserKey},
		{p.App, nkeys.IsValidPublicUserKey},
	} {
		if !c.ok(c.key) {
			t.Errorf("%s is not of its kind", c.key)
		}
	}

	os.Chmod(filepath.Join(dir, "nats-issuer.nk"), 0o644)
	if _, err := deploykeys.LoadOrCreateKeys(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable seed: %v", err)
	}
}

func TestKeysFromSeeds(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	seed := func(kp nkeys.KeyPair) string {
		s, err := kp.Seed()
		if err != nil {
			t.Fatal(err)
		}
		return string(s)
	}
	good := deploykeys.Seeds{Issuer: seed(k.Issuer), XKey: seed(k.XKey), Service: seed(k.Service), App: seed(k.App)}
	got, err := deploykeys.KeysFromSeeds(good)
	if err != nil {
		t.Fatal(err)
	}
	if public(t, got) != public(t, k) {
		t.Error("keys differ from their seeds")
	}
	tests := []struct {
		name string
		edit func(*deploykeys.Seeds)
	}{
		{"missing issuer", func(s *deploykeys.Seeds) { s.Issuer = "" }},
		{"user seed as issuer", func(s *deploykeys.Seeds) { s.Issuer = s.Service }},
		{"account seed as xkey", func(s *deploykeys.Seeds) { s.XKey = s.Issuer }},
		{"garbage", func(s *deploykeys.Seeds) { s.App = "SUNOTASEED" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.edit(&s)
			_, err := deploykeys.KeysFromSeeds(s)
			if err == nil {
				t.Fatal("accepted")
			}
			if strings.Contains(err.Error(), good.Issuer) || strings.Contains(err.Error(), good.Service) {
				t.Errorf("error echoes a seed: %v", err)
			}
		})
	}
}

func TestRoutePassword(t *testing.T) {
	t.Parallel()
	// The issuer seed of the raw key 00 01 … 1f; the password is
	// hex(HMAC-SHA256(raw key, "kezd nats route v1")), computed independently.
	const seed = "SAAAAAICAMCAKBQHBAEQUCYMBUHA6EARCIJRIFIWC4MBSGQ3DQOR4HYMHI"
	const want = "b3eea56e7d806ac80c3a4dd41321487008187a514241991eb80132c83a723efb"
	issuer, err := nkeys.FromSeed([]byte(seed))
	if err != nil {
		t.Fatal(err)
	}
	got, err := deploykeys.Keys{Issuer: issuer}.RoutePassword()
	if err != nil || got != want {
		t.Errorf("RoutePassword() = %q, %v; want %q", got, err, want)
	}

	// Instances sharing a data dir derive the same password; another
	// deployment's differs.
	dir := t.TempDir()
	k1, err := deploykeys.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := deploykeys.LoadOrCreateKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	p1, err1 := k1.RoutePassword()
	p2, err2 := k2.RoutePassword()
	p3, err3 := testKeys(t).RoutePassword()
	if err := errors.Join(err1, err2, err3); err != nil {
		t.Fatal(err)
	}
	if p1 != p2 {
		t.Error("the same keys derive different route passwords")
	}
	if p1 == p3 {
		t.Error("different keys derive the same route password")
	}

	if _, err := (deploykeys.Keys{}).RoutePassword(); err == nil {
		t.Error("RoutePassword without an issuer succeeded")
	}
}
