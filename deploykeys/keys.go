// Package deploykeys holds a kezd deployment's NATS keys and the secrets
// derived from them. None of them is anyone's login to kez: they are what
// makes a deployment's instances and NATS servers one deployment.
//
//   - Issuer signs every auth-callout response and the user JWT in it: the
//     servers admit a client only on its word.
//   - XKey is the key callout requests are sealed to.
//   - Service and App are kezd's own NATS users (the callout responder's,
//     and the one that publishes inbox messages), which the servers let
//     bypass the callout.
//   - From the issuer seed come the cluster route credential (RouteUser and
//     RoutePassword), which a deployment's NATS servers present to each
//     other on their routes and no client can log in with, and the key of
//     the MAC on live publishes (LiveMACKey).
//
// Every instance of a deployment must hold the same keys, since any instance
// may answer any server's callout. They come from seeds given as flags, else
// from Postgres, where the first instance stores them and every other one
// reads them (cmd/kezd's deploymentKeys, through the store's SharedSecret),
// else from the data dir (LoadOrCreateKeys; one instance on SQLite).
package deploykeys

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// Keys are the NATS keys of one kezd deployment. Every instance of the
// deployment, and every nats-server it uses, must share them: any instance may
// answer any server's callout, and the servers trust only this issuer. They
// are the deployment's signing, sealing and own-user keys, never a kez
// user's login.
type Keys struct {
	// Issuer is the account key that signs callout responses and the user
	// JWTs in them (an "A…" nkey); nats-server trusts it as auth_callout.issuer.
	Issuer nkeys.KeyPair
	// XKey is the curve key ("X…") callout requests are sealed to, so that
	// nothing else in the auth account can read a client's credentials.
	XKey nkeys.KeyPair
	// Service is the user ("U…") the callout responder logs in as, in the
	// auth account; it is an auth_users entry, so it bypasses the callout.
	Service nkeys.KeyPair
	// App is kezd's own user ("U…") in the application account, used to
	// publish inbox messages and answer sends; also an auth_users entry.
	App nkeys.KeyPair
}

// PublicKeys are the public halves of Keys, as they appear in server config.
type PublicKeys struct {
	Issuer  string
	XKey    string
	Service string
	App     string
}

// Seeds are the secret halves of Keys as nkey seed strings ("SA…", "SX…",
// "SU…", "SU…"), the form operators pass through flags or the environment.
type Seeds struct {
	Issuer  string
	XKey    string
	Service string
	App     string
}

// keyFile describes one of the seed files LoadOrCreateKeys keeps.
type keyFile struct {
	name   string
	prefix nkeys.PrefixByte
	dst    func(*Keys) *nkeys.KeyPair
}

var keyFiles = []keyFile{
	{"nats-issuer.nk", nkeys.PrefixByteAccount, func(k *Keys) *nkeys.KeyPair { return &k.Issuer }},
	{"nats-xkey.nk", nkeys.PrefixByteCurve, func(k *Keys) *nkeys.KeyPair { return &k.XKey }},
	{"nats-service.nk", nkeys.PrefixByteUser, func(k *Keys) *nkeys.KeyPair { return &k.Service }},
	{"nats-app.nk", nkeys.PrefixByteUser, func(k *Keys) *nkeys.KeyPair { return &k.App }},
}

// LoadOrCreateKeys returns the keys kept in dir, generating any that are
// missing. dir is created with mode 0700 and each seed file with 0600; a seed
// file that others may read is refused rather than used. Creation is safe
// against another process doing the same at once: one of them wins and both
// use its key.
func LoadOrCreateKeys(dir string) (Keys, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Keys{}, fmt.Errorf("nats keys: %w", err)
	}
	var k Keys
	for _, f := range keyFiles {
		kp, err := loadOrCreateKey(filepath.Join(dir, f.name), f.prefix)
		if err != nil {
			return Keys{}, fmt.Errorf("nats keys: %w", err)
		}
		*f.dst(&k) = kp
	}
	return k, nil
}

func loadOrCreateKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	kp, err := readKey(path, prefix)
	if !errors.Is(err, fs.ErrNotExist) {
		return kp, err
	}
	var fresh nkeys.KeyPair
	if prefix == nkeys.PrefixByteCurve {
		fresh, err = nkeys.CreateCurveKeys()
	} else {
		fresh, err = nkeys.CreatePair(prefix)
	}
	if err != nil {
		return nil, fmt.Errorf("generate %s: %w", filepath.Base(path), err)
	}
	seed, err := fresh.Seed()
	if err != nil {
		return nil, err
	}
	// Write a private temporary file, then link it into place: the link fails
	// if another process got there first, and a reader never sees half a seed.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, err
	}
	_, err = tmp.Write(append(seed, '\n'))
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return readKey(path, prefix)
}

func readKey(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s is accessible by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := parseSeed(string(bytes.TrimSpace(b)), prefix)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return kp, nil
}

// KeysFromSeeds parses keys given as seed strings. Every seed is required and
// must be of its kind.
func KeysFromSeeds(s Seeds) (Keys, error) {
	var k Keys
	var err error
	for _, f := range []struct {
		what   string
		seed   string
		prefix nkeys.PrefixByte
		dst    *nkeys.KeyPair
	}{
		{"issuer", s.Issuer, nkeys.PrefixByteAccount, &k.Issuer},
		{"xkey", s.XKey, nkeys.PrefixByteCurve, &k.XKey},
		{"service user", s.Service, nkeys.PrefixByteUser, &k.Service},
		{"app user", s.App, nkeys.PrefixByteUser, &k.App},
	} {
		if *f.dst, err = parseSeed(f.seed, f.prefix); err != nil {
			return Keys{}, fmt.Errorf("nats %s seed: %w", f.what, err)
		}
	}
	return k, nil
}

func parseSeed(seed string, want nkeys.PrefixByte) (nkeys.KeyPair, error) {
	if seed == "" {
		return nil, errors.New("missing")
	}
	prefix, _, err := nkeys.DecodeSeed([]byte(seed))
	if err != nil {
		// The nkeys error does not echo the seed, but keep it generic anyway.
		return nil, errors.New("not a valid nkey seed")
	}
	if prefix != want {
		return nil, fmt.Errorf("a %v seed, want a %v seed", prefix, want)
	}
	return nkeys.FromSeed([]byte(seed))
}

// Public returns the public keys.
func (k Keys) Public() (PublicKeys, error) {
	var p PublicKeys
	var err error
	for _, f := range []struct {
		kp  nkeys.KeyPair
		dst *string
	}{{k.Issuer, &p.Issuer}, {k.XKey, &p.XKey}, {k.Service, &p.Service}, {k.App, &p.App}} {
		if f.kp == nil {
			return PublicKeys{}, errors.New("nats keys: incomplete")
		}
		if *f.dst, err = f.kp.PublicKey(); err != nil {
			return PublicKeys{}, fmt.Errorf("nats keys: %w", err)
		}
	}
	return p, nil
}

// RouteUser is the user name the NATS servers of a deployment present to
// each other on their cluster routes. With RoutePassword it is a server's
// credential for joining the cluster, not a login: nats-server accepts it on
// the route port only, where it admits no client into any account.
const RouteUser = "kezd-route"

// routeLabel separates the route password from anything else that may one
// day be derived from the issuer seed; a new version gives new passwords.
const routeLabel = "kezd nats route v1"

// RoutePassword is the password the NATS servers of a deployment present to
// each other on their cluster routes (as RouteUser). It is derived from the
// issuer seed, which every instance already shares, so instances cluster
// without another secret to distribute; it reveals nothing of the seed. Who
// holds the issuer seed can sign any user into the deployment anyway, so
// the route password grants nothing more.
func (k Keys) RoutePassword() (string, error) {
	if k.Issuer == nil {
		return "", errors.New("nats keys: missing issuer key")
	}
	seed, err := k.Issuer.Seed()
	if err != nil {
		return "", fmt.Errorf("nats keys: %w", err)
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return "", fmt.Errorf("nats keys: %w", err)
	}
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte(routeLabel))
	return hex.EncodeToString(mac.Sum(nil)), nil
}

// LiveMACKey is the key of the MAC on kezd's live publishes (broker's
// MACKey): derived from the issuer seed, so every instance that shares the
// deployment's keys has it and nobody else does.
func (k Keys) LiveMACKey() ([]byte, error) {
	if k.Issuer == nil {
		return nil, errors.New("nats keys: missing issuer key")
	}
	seed, err := k.Issuer.Seed()
	if err != nil {
		return nil, fmt.Errorf("nats keys: %w", err)
	}
	_, raw, err := nkeys.DecodeSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("nats keys: %w", err)
	}
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte(liveMACLabel))
	return mac.Sum(nil), nil
}

// liveMACLabel separates the live MAC key from other keys derived from the
// issuer seed.
const liveMACLabel = "kezd live publish mac v1"

// ServiceUser is the nats.Option that logs a connection in as the callout
// service user (in the auth account).
func (k Keys) ServiceUser() nats.Option { return nkeyOption(k.Service) }

// AppUser is the nats.Option that logs a connection in as kezd's own user in
// the application account.
func (k Keys) AppUser() nats.Option { return nkeyOption(k.App) }

func nkeyOption(kp nkeys.KeyPair) nats.Option {
	return func(o *nats.Options) error {
		if kp == nil {
			return errors.New("nats keys: missing user key")
		}
		pub, err := kp.PublicKey()
		if err != nil {
			return err
		}
		return nats.Nkey(pub, kp.Sign)(o)
	}
}

// GenerateKeys returns a fresh set of deployment keys, kept nowhere.
func GenerateKeys() (Keys, error) {
	var k Keys
	for _, f := range keyFiles {
		var kp nkeys.KeyPair
		var err error
		if f.prefix == nkeys.PrefixByteCurve {
			kp, err = nkeys.CreateCurveKeys()
		} else {
			kp, err = nkeys.CreatePair(f.prefix)
		}
		if err != nil {
			return Keys{}, fmt.Errorf("generate nats keys: %w", err)
		}
		*f.dst(&k) = kp
	}
	return k, nil
}

// Seeds returns the keys' secret halves as seed strings.
func (k Keys) Seeds() (Seeds, error) {
	var s Seeds
	for _, f := range []struct {
		kp  nkeys.KeyPair
		dst *string
	}{{k.Issuer, &s.Issuer}, {k.XKey, &s.XKey}, {k.Service, &s.Service}, {k.App, &s.App}} {
		seed, err := f.kp.Seed()
		if err != nil {
			return Seeds{}, fmt.Errorf("nats keys: %w", err)
		}
		*f.dst = string(seed)
	}
	return s, nil
}
