package identity

import (
	"crypto/ed25519"
	"sync"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Verifier checks signatures as Verify does, and with the same outcome
// (curve25519-voi with its crypto/ed25519-compatible options), but remembers
// the keys it has seen: a key's checks (canonical, on the curve, not of
// small order) are made by the verification itself, on the point it decodes
// anyway, and from a key's second use on its decoded, precomputed form is
// kept, so that a signature verifies in under half the time
// (identity's BenchmarkVerifier). Every send and stream open checks one, and
// senders sign with the same keys again and again. A key's first signature
// is verified without precomputing: that costs as much as the precomputation
// alone, and a key seen once (a stream opened in a reconnect storm of many
// handles) may never be seen again.
//
// It holds at most max keys; past that it forgets an arbitrary half.
// A key is only ever looked up by its own hex text, so what it remembers
// is never a decision about a handle: the caller looks the handle's key up
// each time, and a rotated key is simply another key.
type Verifier struct {
	max int

	mu sync.Mutex
	// keys maps a key's hex text, once a signature has verified under it
	// (so it passes CheckSigningKey's checks), to its precomputed form from
	// its second use; nil until then.
	keys map[string]*voi.ExpandedPublicKey
}

// DefaultVerifierKeys bounds a Verifier's memory: a precomputed key holds
// about 1.3 KB.
const DefaultVerifierKeys = 16384

// NewVerifier returns a Verifier that remembers up to n keys (at least 1).
func NewVerifier(n int) *Verifier {
	return &Verifier{max: max(n, 1), keys: make(map[string]*voi.ExpandedPublicKey)}
}

// keyOptions are crypto/ed25519's verification rules (voi's
// VerifyOptionsStdLib) plus CheckSigningKey's refusals, made on the point
// the verification decodes anyway: a key that is not the canonical encoding
// of its point, or a point of small order, verifies nothing. (The encodings
// with x = 0 and the sign bit set that CheckSigningKey also refuses are of
// y = ±1, both of small order.)
var keyOptions = &voi.Options{Verify: &voi.VerifyOptions{
	AllowSmallOrderR:   true,
	CofactorlessVerify: true,
}}

// Verify checks sig over msg with the hex-encoded signing key pub, like the
// package's Verify.
func (v *Verifier) Verify(pub string, msg string, sig []byte) error {
	if len(sig) != ed25519.SignatureSize {
		return ErrBadSignature
	}
	v.mu.Lock()
	k, seen := v.keys[pub]
	v.mu.Unlock()
	if k == nil {
		raw, err := decodeHex("signing key", pub, ed25519.PublicKeySize)
		if err != nil {
			return err
		}
		if !seen {
			// A key's first signature: remembered as checked only once
			// one verifies under it, which a weak key never does.
			if !voi.VerifyWithOptions(voi.PublicKey(raw), []byte(msg), sig, keyOptions) {
				return ErrBadSignature
			}
			v.remember(pub, nil)
			return nil
		}
		if k, err = voi.NewExpandedPublicKey(voi.PublicKey(raw)); err != nil {
			return ErrBadSignature // cannot happen: a signature verified under it
		}
		v.remember(pub, k)
	}
	if !voi.VerifyExpandedWithOptions(k, []byte(msg), sig, keyOptions) {
		return ErrBadSignature
	}
	return nil
}

// remember records pub as checked, with its precomputed form k or nil.
func (v *Verifier) remember(pub string, k *voi.ExpandedPublicKey) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.keys[pub]; !ok && len(v.keys) >= v.max {
		n := 0
		for h := range v.keys { // map order: an arbitrary half (at least one)
			if n++; n > max(v.max/2, 1) {
				break
			}
			delete(v.keys, h)
		}
	}
	v.keys[pub] = k
}
