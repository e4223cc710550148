package identity

import (
	"bytes"
	"crypto/ecdh"
	"fmt"

	"filippo.io/edwards25519"
)

// ErrWeakKey reports a public key that decodes but must not be used: an
// Ed25519 key that is not the canonical encoding of a point or is a point of
// small order, or a low-order X25519 key (PROTOCOL.md v1.1, "Keys the server
// refuses"). It wraps ErrMalformed, so callers that treat every unusable key
// alike need not know the difference.
var ErrWeakKey = fmt.Errorf("%w: weak key", ErrMalformed)

// CheckSigningKey reports ErrWeakKey unless b is the canonical encoding of an
// Ed25519 point whose order is not small. A small-order key (the identity, or
// any P with 8·P = identity) lets one constant signature verify for every
// message; a non-canonical encoding would let one point be registered twice.
// Registration, key rotation, the NATS login and every verification call it,
// so a key refused here authenticates nothing, even one stored before.
func CheckSigningKey(b []byte) error {
	if len(b) != 32 {
		return fmt.Errorf("%w: signing key must be 32 bytes", ErrMalformed)
	}
	p, err := new(edwards25519.Point).SetBytes(b)
	if err != nil {
		return fmt.Errorf("%w: signing key is not an Ed25519 point", ErrWeakKey)
	}
	// SetBytes accepts every encoding of a point (y ≥ p, or x = 0 with the
	// sign bit set); the canonical one is what Bytes gives back.
	if !bytes.Equal(p.Bytes(), b) {
		return fmt.Errorf("%w: signing key is not the canonical encoding of its point", ErrWeakKey)
	}
	if new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1 {
		return fmt.Errorf("%w: signing key is a point of small order", ErrWeakKey)
	}
	return nil
}

// lowOrderProbe is any X25519 private key. Clamping makes every X25519
// scalar a multiple of 8, so its product with a point of order 1, 2, 4 or 8
// (in any encoding) is all zeros, which crypto/ecdh reports as an error.
var lowOrderProbe = [32]byte{0: 0x5a, 31: 0x5a}

// CheckEncryptionKey reports ErrWeakKey when b is an all-zero or other
// low-order X25519 public key, with which a shared secret is the same for
// every private key. The server never uses encryption keys, so any other
// 32 bytes are kept exactly as the client sent them.
func CheckEncryptionKey(b []byte) error {
	if len(b) != 32 {
		return fmt.Errorf("%w: encryption key must be 32 bytes", ErrMalformed)
	}
	pub, err := ecdh.X25519().NewPublicKey(b)
	if err != nil {
		return fmt.Errorf("%w: encryption key: %v", ErrMalformed, err)
	}
	probe, err := ecdh.X25519().NewPrivateKey(lowOrderProbe[:])
	if err != nil {
		return fmt.Errorf("encryption key check: %w", err) // cannot happen: any 32 bytes are a key
	}
	if _, err := probe.ECDH(pub); err != nil {
		return fmt.Errorf("%w: encryption key is a low-order X25519 point", ErrWeakKey)
	}
	return nil
}
