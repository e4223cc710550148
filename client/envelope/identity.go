package envelope

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"fmt"

	"github.com/kez-chat/kezd/identity"
)

// Identity is a handle's private key material: the Ed25519 signing key that
// proves who it is, and the X25519 key that envelopes are encrypted to.
type Identity struct {
	Handle     string
	Signing    ed25519.PrivateKey
	Encryption *ecdh.PrivateKey
}

// Peer is a handle's public keys, as the registry publishes them.
type Peer struct {
	Handle        string
	SigningKey    ed25519.PublicKey
	EncryptionKey *ecdh.PublicKey
}

// Generate returns a new Identity for handle with fresh random keys.
func Generate(handle string) (*Identity, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return nil, err
	}
	_, sk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	ek, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate encryption key: %w", err)
	}
	return &Identity{Handle: handle, Signing: sk, Encryption: ek}, nil
}

// NewIdentity builds an Identity from a 32-byte Ed25519 seed and a 32-byte
// X25519 private key, the form in which key files keep them.
func NewIdentity(handle string, signingSeed, encryptionKey []byte) (*Identity, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return nil, err
	}
	if len(signingSeed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing seed must be %d bytes", ed25519.SeedSize)
	}
	ek, err := ecdh.X25519().NewPrivateKey(encryptionKey)
	if err != nil {
		return nil, fmt.Errorf("encryption key: %w", err)
	}
	return &Identity{Handle: handle, Signing: ed25519.NewKeyFromSeed(signingSeed), Encryption: ek}, nil
}

// Peer returns the public half of id.
func (id *Identity) Peer() Peer {
	return Peer{
		Handle:        id.Handle,
		SigningKey:    id.Signing.Public().(ed25519.PublicKey),
		EncryptionKey: id.Encryption.PublicKey(),
	}
}

// SigningKeyHex is the lowercase hex signing public key, as the protocol spells it.
func (id *Identity) SigningKeyHex() string {
	return hex.EncodeToString(id.Signing.Public().(ed25519.PublicKey))
}

// EncryptionKeyHex is the lowercase hex X25519 public key, as the protocol spells it.
func (id *Identity) EncryptionKeyHex() string {
	return hex.EncodeToString(id.Encryption.PublicKey().Bytes())
}

// ParsePeer builds a Peer from the hex keys the registry returns, checking
// the handle and both keys.
func ParsePeer(handle, signingKey, encryptionKey string) (Peer, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return Peer{}, err
	}
	sk, err := identity.ParseSigningKey(signingKey)
	if err != nil {
		return Peer{}, err
	}
	raw, err := identity.ParseEncryptionKey(encryptionKey)
	if err != nil {
		return Peer{}, err
	}
	ek, err := ecdh.X25519().NewPublicKey(raw)
	if err != nil {
		return Peer{}, fmt.Errorf("encryption key: %w", err)
	}
	return Peer{Handle: handle, SigningKey: sk, EncryptionKey: ek}, nil
}
