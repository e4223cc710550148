// Package envelope owns kez's end-to-end encryption: the envelope a sender
// seals for one recipient and the recipient opens, so that the server only
// ever carries ciphertext and a recipient verifies the sender without trusting
// the server. The format is specified in docs/envelope.md; this package is its
// reference implementation and its test vectors live in testdata/.
//
// Sealing uses an ephemeral X25519 key agreement with the recipient's
// encryption key, HKDF-SHA256 to derive a one-time key and nonce, and
// ChaCha20-Poly1305; the sender signs the header and ciphertext with its
// Ed25519 key. Every field is bound into the AEAD's additional data or the
// signature, so tampering with any of them fails to open.
package envelope

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/kez-chat/kezd/identity"
)

// Version is the envelope format this package seals.
const Version = 1

// MaxPlaintext is the largest plaintext Seal accepts: its sealed envelope
// stays under the server's 64 KiB envelope limit.
const MaxPlaintext = 45 << 10

// label separates kez envelope keys, additional data and signatures from
// anything else the same keys might ever sign or derive.
const label = "kez-envelope/1"

// Errors Open reports. Each names one reason an envelope is refused, so a
// client can tell a person what went wrong.
var (
	// ErrMalformed reports an envelope that does not parse as version 1.
	ErrMalformed = errors.New("malformed envelope")
	// ErrUnsupportedVersion reports a version this package cannot open.
	ErrUnsupportedVersion = errors.New("unsupported envelope version")
	// ErrWrongRecipient reports an envelope sealed for another handle or key.
	ErrWrongRecipient = errors.New("envelope is not addressed to this handle and key")
	// ErrUnknownSender reports a sender whose signing key cannot be found.
	ErrUnknownSender = errors.New("envelope sender is unknown")
	// ErrSenderKeyMismatch reports an envelope whose sender key is not the
	// key registered for the handle it claims to come from.
	ErrSenderKeyMismatch = errors.New("envelope sender key is not the sender's registered key")
	// ErrBadSignature reports a signature that does not verify: the envelope
	// was altered after it was sealed, or was not sealed by its sender.
	ErrBadSignature = errors.New("envelope signature does not verify (altered or forged)")
	// ErrDecrypt reports a correctly signed envelope whose ciphertext does not
	// decrypt with this recipient's key.
	ErrDecrypt = errors.New("envelope does not decrypt")
)

// Envelope is the wire form of a version 1 envelope. Keys are lowercase hex,
// the ciphertext is standard padded base64.
type Envelope struct {
	V            int    `json:"v"`
	From         string `json:"from"`
	To           string `json:"to"`
	ID           string `json:"id"`
	TS           int64  `json:"ts"`
	SenderKey    string `json:"sender_key"`
	RecipientKey string `json:"recipient_key"`
	EphemeralKey string `json:"ephemeral_key"`
	Ciphertext   string `json:"ciphertext"`
	Sig          string `json:"sig"`
}

// Opened is a verified, decrypted envelope.
type Opened struct {
	From      string
	To        string
	ID        string
	TS        int64
	SenderKey ed25519.PublicKey
	Plaintext []byte
}

// SenderKeys returns the registered signing key of handle. When the handle
// has none it returns an error wrapping ErrUnknownSender.
type SenderKeys func(ctx context.Context, handle string) (ed25519.PublicKey, error)

// Seal encrypts plaintext from sender to recipient and signs it. id is the
// client message id the envelope will be sent with and ts the sender's clock
// in Unix seconds; both are signed, so a recipient can match them against the
// stored message.
func Seal(sender *Identity, recipient Peer, id string, ts int64, plaintext []byte) ([]byte, error) {
	eph, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ephemeral key: %w", err)
	}
	return seal(sender, recipient, id, ts, plaintext, eph)
}

// seal is Seal with the ephemeral key chosen by the caller, which is what
// makes the test vectors reproducible. Nothing else may call it with a key
// that is not fresh and random.
func seal(sender *Identity, recipient Peer, id string, ts int64, plaintext []byte, eph *ecdh.PrivateKey) ([]byte, error) {
	if err := identity.ValidateHandle(sender.Handle); err != nil {
		return nil, fmt.Errorf("sender: %w", err)
	}
	if err := identity.ValidateHandle(recipient.Handle); err != nil {
		return nil, fmt.Errorf("recipient: %w", err)
	}
	if err := identity.ValidateClientID(id); err != nil {
		return nil, err
	}
	if ts < 0 {
		return nil, errors.New("timestamp must not be negative")
	}
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("plaintext is %d bytes, at most %d fit in an envelope", len(plaintext), MaxPlaintext)
	}
	shared, err := eph.ECDH(recipient.EncryptionKey)
	if err != nil {
		return nil, fmt.Errorf("key agreement: %w", err)
	}
	e := Envelope{
		V:            Version,
		From:         sender.Handle,
		To:           recipient.Handle,
		ID:           id,
		TS:           ts,
		SenderKey:    hex.EncodeToString(sender.Signing.Public().(ed25519.PublicKey)),
		RecipientKey: hex.EncodeToString(recipient.EncryptionKey.Bytes()),
		EphemeralKey: hex.EncodeToString(eph.PublicKey().Bytes()),
	}
	aead, nonce, err := deriveAEAD(shared, eph.PublicKey().Bytes(), recipient.EncryptionKey.Bytes())
	if err != nil {
		return nil, err
	}
	header := e.header()
	ct := aead.Seal(nil, nonce, plaintext, []byte(header))
	e.Ciphertext = base64.StdEncoding.EncodeToString(ct)
	e.Sig = hex.EncodeToString(ed25519.Sign(sender.Signing, []byte(signedString(header, ct))))
	return json.Marshal(e)
}

// Open parses raw, checks that it is addressed to me, finds the sender's
// registered signing key with senders, verifies the signature and decrypts.
// The checks run in that order and each failure wraps its own error
// (ErrMalformed, ErrUnsupportedVersion, ErrWrongRecipient, ErrUnknownSender,
// ErrSenderKeyMismatch, ErrBadSignature, ErrDecrypt).
func Open(ctx context.Context, raw []byte, me *Identity, senders SenderKeys) (*Opened, error) {
	e, err := Parse(raw)
	if err != nil {
		return nil, err
	}
	if e.To != me.Handle || e.RecipientKey != me.EncryptionKeyHex() {
		return nil, fmt.Errorf("%w: sealed for %q", ErrWrongRecipient, e.To)
	}
	registered, err := senders(ctx, e.From)
	if err != nil {
		if errors.Is(err, ErrUnknownSender) {
			return nil, err
		}
		return nil, fmt.Errorf("look up sender %q: %w", e.From, err)
	}
	senderKey, _ := hex.DecodeString(e.SenderKey) // Parse checked it
	if subtle.ConstantTimeCompare(senderKey, registered) != 1 {
		return nil, fmt.Errorf("%w: %q", ErrSenderKeyMismatch, e.From)
	}
	ct, _ := base64.StdEncoding.DecodeString(e.Ciphertext)
	sig, _ := hex.DecodeString(e.Sig)
	header := e.header()
	if !ed25519.Verify(registered, []byte(signedString(header, ct)), sig) {
		return nil, ErrBadSignature
	}
	ephRaw, _ := hex.DecodeString(e.EphemeralKey)
	eph, err := ecdh.X25519().NewPublicKey(ephRaw)
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral key: %v", ErrDecrypt, err)
	}
	shared, err := me.Encryption.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("%w: key agreement: %v", ErrDecrypt, err)
	}
	aead, nonce, err := deriveAEAD(shared, ephRaw, me.Encryption.PublicKey().Bytes())
	if err != nil {
		return nil, err
	}
	pt, err := aead.Open(nil, nonce, ct, []byte(header))
	if err != nil {
		return nil, ErrDecrypt
	}
	return &Opened{From: e.From, To: e.To, ID: e.ID, TS: e.TS, SenderKey: registered, Plaintext: pt}, nil
}

// Parse decodes raw as an envelope and checks the syntax of every field. It
// verifies nothing; Open does.
func Parse(raw []byte) (*Envelope, error) {
	var probe struct {
		V *json.Number `json:"v"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if probe.V == nil {
		return nil, fmt.Errorf("%w: no version field", ErrMalformed)
	}
	if probe.V.String() != strconv.Itoa(Version) {
		return nil, fmt.Errorf("%w: %s (this client opens version %d)", ErrUnsupportedVersion, probe.V.String(), Version)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var e Envelope
	if err := dec.Decode(&e); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	if err := e.check(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return &e, nil
}

func (e *Envelope) check() error {
	if err := identity.ValidateHandle(e.From); err != nil {
		return fmt.Errorf("from: %v", err)
	}
	if err := identity.ValidateHandle(e.To); err != nil {
		return fmt.Errorf("to: %v", err)
	}
	if err := identity.ValidateClientID(e.ID); err != nil {
		return err
	}
	if e.TS < 0 {
		return errors.New("ts must not be negative")
	}
	if _, err := identity.ParseSigningKey(e.SenderKey); err != nil {
		return fmt.Errorf("sender_key: %v", err)
	}
	if _, err := identity.ParseEncryptionKey(e.RecipientKey); err != nil {
		return fmt.Errorf("recipient_key: %v", err)
	}
	if _, err := identity.ParseEncryptionKey(e.EphemeralKey); err != nil {
		return fmt.Errorf("ephemeral_key: %v", err)
	}
	if _, err := identity.ParseSignature(e.Sig); err != nil {
		return errors.New("sig must be 128 lowercase hex characters")
	}
	ct, err := base64.StdEncoding.Strict().DecodeString(e.Ciphertext)
	if err != nil {
		return fmt.Errorf("ciphertext: %v", err)
	}
	if len(ct) < chacha20poly1305.Overhead {
		return errors.New("ciphertext is shorter than its tag")
	}
	return nil
}

// header is the canonical text of every field except the ciphertext and the
// signature: the AEAD's additional data, and the start of what is signed.
// Every field's syntax excludes "\n", so the lines cannot be confused.
func (e *Envelope) header() string {
	return strings.Join([]string{
		label,
		e.From,
		e.To,
		e.ID,
		strconv.FormatInt(e.TS, 10),
		e.SenderKey,
		e.RecipientKey,
		e.EphemeralKey,
	}, "\n")
}

// signedString is what the sender signs: the header and the SHA-256 of the
// ciphertext, so the signature covers every field.
func signedString(header string, ct []byte) string {
	sum := sha256.Sum256(ct)
	return header + "\n" + hex.EncodeToString(sum[:])
}

// deriveAEAD derives the one-time ChaCha20-Poly1305 key and nonce from the
// shared secret, salted with both public keys of the agreement.
func deriveAEAD(shared, ephPub, recipientPub []byte) (cipher.AEAD, []byte, error) {
	salt := append(append([]byte{}, ephPub...), recipientPub...)
	okm, err := hkdf.Key(sha256.New, shared, salt, label, chacha20poly1305.KeySize+chacha20poly1305.NonceSize)
	if err != nil {
		return nil, nil, fmt.Errorf("derive key: %w", err)
	}
	aead, err := chacha20poly1305.New(okm[:chacha20poly1305.KeySize])
	if err != nil {
		return nil, nil, fmt.Errorf("derive key: %w", err)
	}
	return aead, okm[chacha20poly1305.KeySize:], nil
}
