package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nkeys"
)

// runKez runs the CLI in-process with HOME in a fresh directory.
func runKez(t *testing.T, home string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == "HOME" {
			return home
		}
		return ""
	}
	err := run(t.Context(), args, getenv, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestKeygen(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	if _, _, err := runKez(t, home, "", "keygen", "alice"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, ".config", "kez", "alice.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(filepath.Dir(path)); di.Mode().Perm()&0o077 != 0 {
		t.Fatalf("key dir mode %v", di.Mode().Perm())
	}
	first, _ := os.ReadFile(path)

	_, _, err = runKez(t, home, "", "keygen", "alice")
	if !errors.Is(err, errKeyExists) || exitCode(err) == 0 {
		t.Fatalf("second keygen: %v", err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Fatal("keygen without --force changed the key file")
	}
	if _, _, err := runKez(t, home, "", "keygen", "--force", "alice"); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); bytes.Equal(first, again) {
		t.Fatal("keygen --force kept the old key")
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode after --force %v", fi.Mode().Perm())
	}

	other := filepath.Join(t.TempDir(), "k.json")
	out, _, err := runKez(t, home, "", "keygen", "--json", "--key", other, "bob")
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]string
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["key_file"] != other || res["handle"] != "bob" {
		t.Fatalf("keygen --json: %q %v", out, err)
	}

	_, _, err = runKez(t, home, "", "keygen", "Not.Valid")
	if exitCode(err) != 2 {
		t.Fatalf("invalid handle: %v (exit %d)", err, exitCode(err))
	}
}

func TestKeyFileReadableByOthersIsRefused(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	if _, _, err := runKez(t, home, "", "keygen", "alice"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, ".config", "kez", "alice.json")
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := runKez(t, home, "", "nkey", "--as", "alice")
	if err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("nkey with a 0644 key file: %v", err)
	}
}

func TestNkey(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	if _, _, err := runKez(t, home, "", "keygen", "alice"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runKez(t, home, "", "nkey", "--as", "alice")
	if err != nil {
		t.Fatal(err)
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(out)))
	if err != nil {
		t.Fatalf("nkey output %q: %v", out, err)
	}
	pub, _ := kp.PublicKey()
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(pub))
	if err != nil {
		t.Fatal(err)
	}
	var kf keyFile
	data, _ := os.ReadFile(filepath.Join(home, ".config", "kez", "alice.json"))
	if err := json.Unmarshal(data, &kf); err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(raw) != kf.SigningKey {
		t.Fatalf("nkey user %s is not the signing key %s", pub, kf.SigningKey)
	}
	// The seed signs as the kez key does.
	sig, _ := kp.Sign([]byte("nonce"))
	if !ed25519.Verify(ed25519.PublicKey(raw), []byte("nonce"), sig) {
		t.Fatal("nkey signature does not verify with the signing key")
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"send"},
		{"send", "--as", "alice"},
		{"inbox"},
		{"register"},
		{"whois"},
	} {
		_, _, err := runKez(t, home, "", args...)
		if err == nil || exitCode(err) == 0 {
			t.Fatalf("kez %v: %v", args, err)
		}
	}
	// No server anywhere: a clear message, not a crash.
	if _, _, err := runKez(t, home, "", "keygen", "alice"); err != nil {
		t.Fatal(err)
	}
	_, _, err := runKez(t, home, "", "register", "alice")
	if err == nil || !strings.Contains(err.Error(), "--server") {
		t.Fatalf("register without a server: %v", err)
	}
}
