// Package identity owns what a kez identity is on the wire: handle and client-id
// syntax, hex-encoded keys and signatures, the canonical strings that are signed,
// and the parsers for the two forms of request credentials. It is pure: no I/O,
// no clock of its own, and it imports nothing of kezd but the protocol's words.
package identity

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/kez-chat/kezd/protocol"
)

// MaxHandleLen is the longest handle PROTOCOL.md allows.
const MaxHandleLen = 32

// MaxClientIDLen is the longest client message id PROTOCOL.md allows.
const MaxClientIDLen = 64

// Sentinel errors. Callers map them to protocol error codes.
var (
	// ErrInvalidHandle reports a handle outside the handle alphabet or length.
	ErrInvalidHandle = errors.New("invalid handle")
	// ErrMalformed reports credentials, keys or signatures that do not parse.
	ErrMalformed = errors.New("malformed credentials")
	// ErrBadSignature reports a well-formed signature that does not verify.
	ErrBadSignature = errors.New("signature does not verify")
	// ErrStale reports a timestamp outside the accepted skew window.
	ErrStale = errors.New("timestamp outside the accepted window")
)

// ValidateHandle reports whether h is a valid handle: 1 to 32 characters of
// a-z 0-9 _ -, starting with a letter or digit. A valid handle is a single
// NATS subject token by construction.
func ValidateHandle(h string) error {
	if len(h) == 0 || len(h) > MaxHandleLen {
		return fmt.Errorf("%w: must be 1 to %d characters", ErrInvalidHandle, MaxHandleLen)
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return fmt.Errorf("%w: only a-z 0-9 _ - are allowed, starting with a letter or digit", ErrInvalidHandle)
		}
	}
	return nil
}

// ValidateClientID reports whether id is a valid client message id: 1 to 64
// characters of A-Z a-z 0-9 _ -.
func ValidateClientID(id string) error {
	if len(id) == 0 || len(id) > MaxClientIDLen {
		return fmt.Errorf("id must be 1 to %d characters", MaxClientIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return errors.New("id may only contain A-Z a-z 0-9 _ -")
		}
	}
	return nil
}

// decodeHex decodes exactly n bytes of lowercase hex.
func decodeHex(what, s string, n int) ([]byte, error) {
	if len(s) != 2*n {
		return nil, fmt.Errorf("%w: %s must be %d hex characters", ErrMalformed, what, 2*n)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return nil, fmt.Errorf("%w: %s must be lowercase hex", ErrMalformed, what)
		}
	}
	b, err := hex.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return b, nil
}

// ParseSigningKey decodes a 64-character lowercase hex Ed25519 public key and
// refuses a weak one (see CheckSigningKey). Lowercase hex of a canonical
// encoding is one string per point, so keys compare as strings.
func ParseSigningKey(s string) (ed25519.PublicKey, error) {
	b, err := decodeHex("signing key", s, ed25519.PublicKeySize)
	if err != nil {
		return nil, err
	}
	if err := CheckSigningKey(b); err != nil {
		return nil, err
	}
	return ed25519.PublicKey(b), nil
}

// ParseEncryptionKey decodes a 64-character lowercase hex X25519 public key
// and refuses a low-order one (see CheckEncryptionKey).
func ParseEncryptionKey(s string) ([]byte, error) {
	b, err := decodeHex("encryption key", s, 32)
	if err != nil {
		return nil, err
	}
	if err := CheckEncryptionKey(b); err != nil {
		return nil, err
	}
	return b, nil
}

// ParseSignature decodes a 128-character lowercase hex Ed25519 signature.
func ParseSignature(s string) ([]byte, error) {
	return decodeHex("signature", s, ed25519.SignatureSize)
}

// Verify checks sig over msg with the hex-encoded signing key pub. A weak
// key verifies nothing (ErrWeakKey), even one that was stored before kezd
// refused them at registration.
func Verify(pub string, msg string, sig []byte) error {
	key, err := ParseSigningKey(pub)
	if err != nil {
		return err
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(key, []byte(msg), sig) {
		return ErrBadSignature
	}
	return nil
}

// CheckSkew reports ErrStale when ts is further than skew from now.
func CheckSkew(now time.Time, ts int64, skew time.Duration) error {
	// Compare bounds rather than |now - ts|, which overflows for hostile ts.
	// In whole seconds: a skew below one second still accepts the same second.
	n, s := now.Unix(), int64(skew/time.Second)
	if ts < n-s || ts > n+s {
		return ErrStale
	}
	return nil
}

// Sign returns the lowercase hex Ed25519 signature of msg. It is the client
// half of Verify, used by kezd's own client and tests.
func Sign(priv ed25519.PrivateKey, msg string) string {
	return hex.EncodeToString(ed25519.Sign(priv, []byte(msg)))
}

func join(lines ...string) string { return strings.Join(lines, "\n") }

// RegisterString is the canonical string signed to register a handle.
func RegisterString(handle, signingKey, encryptionKey string, ts int64) string {
	return join("POST", protocol.PathHandles, handle, signingKey, encryptionKey, strconv.FormatInt(ts, 10))
}

// BodySHA256 returns the lowercase hex SHA-256 of a send's exact request
// body, which SendString covers.
func BodySHA256(body []byte) string {
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// SendString is the canonical string signed to send a message; bodySHA256 is
// the lowercase hex SHA-256 of the exact request body.
func SendString(bodySHA256 string, ts int64) string {
	return join("POST", protocol.PathMessages, bodySHA256, strconv.FormatInt(ts, 10))
}

// PollString is the canonical string signed to poll an inbox.
func PollString(handle string, since int64, ts int64) string {
	return join("GET", protocol.InboxPath(handle), "since="+strconv.FormatInt(since, 10), strconv.FormatInt(ts, 10))
}

// StreamString is the canonical string signed to open an inbox stream.
func StreamString(handle string, ts int64) string {
	return join("GET", protocol.StreamPath(handle), strconv.FormatInt(ts, 10))
}

// RotateString is the canonical string signed, by the current signing key and
// by the new one, to rotate a handle's keys to signingKey and encryptionKey.
func RotateString(handle, signingKey, encryptionKey string, ts int64) string {
	return join("POST", protocol.KeysPath(handle), signingKey, encryptionKey, strconv.FormatInt(ts, 10))
}

// DeleteHandleString is the canonical string signed to delete a handle.
func DeleteHandleString(handle string, ts int64) string {
	return join("DELETE", protocol.HandlePath(handle), strconv.FormatInt(ts, 10))
}

// DeleteThroughString is the canonical string signed to delete an inbox's
// messages with seq <= through.
func DeleteThroughString(handle string, through int64, ts int64) string {
	return join("DELETE", protocol.InboxPath(handle), "through="+strconv.FormatInt(through, 10), strconv.FormatInt(ts, 10))
}
