package identity

import (
	"crypto/ed25519"
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Verifier checks signatures as Verify does, and with the same outcome
// (curve25519-voi with its crypto/ed25519-compatible options), but keeps the
// decoded, precomputed form of the keys it has seen: a signature then
// verifies in under half the time (identity's BenchmarkVerify). Every send
// and stream open checks one, and senders sign with the same keys again
// and again.
//
// It holds at most max keys; past that it forgets an arbitrary half.
// A key is only ever looked up by its own hex text, so what it remembers
// is never a decision about a handle: the caller looks the handle's key up
// each time, and a rotated key is simply another key.
type Verifier struct {
	max int

	mu   sync.Mutex
	keys map[string]*voi.ExpandedPublicKey
}

// DefaultVerifierKeys bounds a Verifier's memory: a precomputed key holds
// about 1.3 KB.
const DefaultVerifierKeys = 16384

// NewVerifier returns a Verifier that remembers up to n keys (at least 1).
func NewVerifier(n int) *Verifier {
	return &Verifier{max: max(n, 1), keys: make(map[string]*voi.ExpandedPublicKey)}
}

var stdlibOptions = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// Verify checks sig over msg with the hex-encoded signing key pub, like the
// package's Verify.
func (v *Verifier) Verify(pub string, msg string, sig []byte) error {
	if len(sig) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	key, err := v.key(pub)
	if err != nil {
		return err
	}
	if !voi.VerifyExpandedWithOptions(key, []byte(msg), sig, stdlibOptions) {
		return ErrBadSignature
	}
	return nil
}

func (v *Verifier) key(pub string) (*voi.ExpandedPublicKey, error) {
	v.mu.Lock()
	k, ok := v.keys[pub]
	v.mu.Unlock()
	if ok {
		return k, nil
	}
	raw, err := ParseSigningKey(pub)
	if err != nil {
		return nil, err
	}
	k, err = voi.NewExpandedPublicKey(voi.PublicKey(raw))
	if err != nil {
		// Not a point on the curve: crypto/ed25519 rejects every
		// signature under it.
		return nil, ErrBadSignature
	}
	v.mu.Lock()
	if len(v.keys) >= v.max {
		n := 0
		for h := range v.keys { // map order: an arbitrary half
			if n++; n > v.max/2 {
				break
			}
			delete(v.keys, h)
		}
	}
	v.keys[pub] = k
	v.mu.Unlock()
	return k, nil
}
