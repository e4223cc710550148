package envelope

import (
	"bytes"
	"context"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json")

// fixedIdentity derives a reproducible identity from its handle, for vectors.
func fixedIdentity(t *testing.T, handle string) *Identity {
	t.Helper()
	seed := sha256.Sum256([]byte("kez test signing " + handle))
	enc := sha256.Sum256([]byte("kez test encryption " + handle))
	id, err := NewIdentity(handle, seed[:], enc[:])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func fixedEphemeral(t *testing.T, name string) *ecdh.PrivateKey {
	t.Helper()
	b := sha256.Sum256([]byte("kez test ephemeral " + name))
	k, err := ecdh.X25519().NewPrivateKey(b[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// registry resolves sender keys from a fixed set of identities.
func registry(ids ...*Identity) SenderKeys {
	return func(_ context.Context, handle string) (ed25519.PublicKey, error) {
		for _, id := range ids {
			if id.Handle == handle {
				return id.Peer().SigningKey, nil
			}
		}
		return nil, fmt.Errorf("%w: %q", ErrUnknownSender, handle)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	alice, err := Generate("alice")
	if err != nil {
		t.Fatal(err)
	}
	bob, err := Generate("bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, pt := range [][]byte{nil, []byte("hi bob"), bytes.Repeat([]byte{0xff}, MaxPlaintext)} {
		raw, err := Seal(alice, bob.Peer(), "m-1", 1700000000, pt)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 64<<10 {
			t.Fatalf("envelope of %d bytes exceeds the server limit", len(raw))
		}
		got, err := Open(t.Context(), raw, bob, registry(alice))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Plaintext, pt) || got.From != "alice" || got.To != "bob" || got.ID != "m-1" || got.TS != 1700000000 {
			t.Fatalf("opened %+v", got)
		}
	}
	if _, err := Seal(alice, bob.Peer(), "m-1", 0, make([]byte, MaxPlaintext+1)); err == nil {
		t.Fatal("sealed an oversized plaintext")
	}
}

func TestSealIsRandomized(t *testing.T) {
	t.Parallel()
	alice, bob := fixedIdentity(t, "alice"), fixedIdentity(t, "bob")
	a, err := Seal(alice, bob.Peer(), "x", 1, []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Seal(alice, bob.Peer(), "x", 1, []byte("same"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same message are identical; the ephemeral key is not fresh")
	}
}

// vectorFile is testdata/vectors.json. docs/envelope.md describes it.
type vectorFile struct {
	Comment    string          `json:"comment"`
	Identities []vectorKeys    `json:"identities"`
	Valid      []validVector   `json:"valid"`
	Invalid    []invalidVector `json:"invalid"`
}

type vectorKeys struct {
	Handle           string `json:"handle"`
	SigningSeed      string `json:"signing_seed"`
	SigningKey       string `json:"signing_key"`
	EncryptionSecret string `json:"encryption_secret"`
	EncryptionKey    string `json:"encryption_key"`
}

type validVector struct {
	Name             string          `json:"name"`
	From             string          `json:"from"`
	To               string          `json:"to"`
	ID               string          `json:"id"`
	TS               int64           `json:"ts"`
	EphemeralSecret  string          `json:"ephemeral_secret"`
	PlaintextUTF8    string          `json:"plaintext"`
	Envelope         json.RawMessage `json:"envelope"`
	SharedSecret     string          `json:"shared_secret"`
	AdditionalData   string          `json:"additional_data"`
	SignedStringHash string          `json:"signed_string_sha256"`
}

type invalidVector struct {
	Name     string          `json:"name"`
	To       string          `json:"to"`
	Envelope json.RawMessage `json:"envelope"`
	Error    string          `json:"error"`
}

// errorNames are the names vectors use for Open's errors.
var errorNames = map[string]error{
	"malformed":           ErrMalformed,
	"unsupported_version": ErrUnsupportedVersion,
	"wrong_recipient":     ErrWrongRecipient,
	"unknown_sender":      ErrUnknownSender,
	"sender_key_mismatch": ErrSenderKeyMismatch,
	"bad_signature":       ErrBadSignature,
	"decrypt":             ErrDecrypt,
}

// The identities in the vectors.
var vectorHandles = []string{"alice", "bob", "carol", "mallory"}

func TestVectors(t *testing.T) {
	t.Parallel()
	path := filepath.Join("testdata", "vectors.json")
	if *update {
		derived := map[string]*Identity{}
		for _, h := range vectorHandles {
			derived[h] = fixedIdentity(t, h)
		}
		writeVectors(t, path, derived)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	if err := json.Unmarshal(raw, &vf); err != nil {
		t.Fatal(err)
	}
	// Build the identities from the file's secrets, as another
	// implementation would, and check the public keys it lists.
	ids := map[string]*Identity{}
	for _, k := range vf.Identities {
		seed, _ := hex.DecodeString(k.SigningSeed)
		enc, _ := hex.DecodeString(k.EncryptionSecret)
		id, err := NewIdentity(k.Handle, seed, enc)
		if err != nil {
			t.Fatal(err)
		}
		if k.SigningKey != id.SigningKeyHex() || k.EncryptionKey != id.EncryptionKeyHex() {
			t.Fatalf("public keys of %q in the vectors do not match their secrets", k.Handle)
		}
		ids[k.Handle] = id
	}
	// mallory is not registered: her envelopes come from an unknown sender.
	known := registry(ids["alice"], ids["bob"], ids["carol"])
	if len(vf.Valid) == 0 || len(vf.Invalid) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range vf.Valid {
		t.Run("valid/"+v.Name, func(t *testing.T) {
			ephRaw, _ := hex.DecodeString(v.EphemeralSecret)
			eph, err := ecdh.X25519().NewPrivateKey(ephRaw)
			if err != nil {
				t.Fatal(err)
			}
			got, err := seal(ids[v.From], ids[v.To].Peer(), v.ID, v.TS, []byte(v.PlaintextUTF8), eph)
			if err != nil {
				t.Fatal(err)
			}
			var want bytes.Buffer
			if err := json.Compact(&want, v.Envelope); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("seal:\n got %s\nwant %s", got, want.Bytes())
			}
			opened, err := Open(t.Context(), v.Envelope, ids[v.To], known)
			if err != nil {
				t.Fatal(err)
			}
			if string(opened.Plaintext) != v.PlaintextUTF8 {
				t.Fatalf("opened %q, want %q", opened.Plaintext, v.PlaintextUTF8)
			}
		})
	}
	for _, v := range vf.Invalid {
		t.Run("invalid/"+v.Name, func(t *testing.T) {
			want, ok := errorNames[v.Error]
			if !ok {
				t.Fatalf("unknown error name %q", v.Error)
			}
			_, err := Open(t.Context(), v.Envelope, ids[v.To], known)
			if !errors.Is(err, want) {
				t.Fatalf("Open: %v, want %v", err, want)
			}
			// Each failure is distinct: it matches no other error.
			for name, other := range errorNames {
				if name != v.Error && errors.Is(err, other) {
					t.Fatalf("Open: %v also matches %s", err, name)
				}
			}
		})
	}
}

// writeVectors regenerates the vector file from fixed keys. Run with
// `go test ./envelope -run TestVectors -update` (in client/) after a deliberate format change.
func writeVectors(t *testing.T, path string, ids map[string]*Identity) {
	t.Helper()
	vf := vectorFile{Comment: "kez envelope v1 test vectors; see docs/envelope.md. Secrets are hex; envelope is the exact sealed JSON."}
	for _, h := range vectorHandles {
		id := ids[h]
		enc := id.Encryption.Bytes()
		vf.Identities = append(vf.Identities, vectorKeys{
			Handle:           h,
			SigningSeed:      hex.EncodeToString(id.Signing.Seed()),
			SigningKey:       id.SigningKeyHex(),
			EncryptionSecret: hex.EncodeToString(enc),
			EncryptionKey:    id.EncryptionKeyHex(),
		})
	}
	mk := func(name, from, to, msgID string, ts int64, pt string) validVector {
		eph := fixedEphemeral(t, name)
		raw, err := seal(ids[from], ids[to].Peer(), msgID, ts, []byte(pt), eph)
		if err != nil {
			t.Fatal(err)
		}
		e, err := Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		shared, err := eph.ECDH(ids[to].Encryption.PublicKey())
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := base64.StdEncoding.DecodeString(e.Ciphertext)
		sum := sha256.Sum256([]byte(signedString(e.header(), ct)))
		return validVector{
			Name: name, From: from, To: to, ID: msgID, TS: ts,
			EphemeralSecret:  hex.EncodeToString(eph.Bytes()),
			PlaintextUTF8:    pt,
			Envelope:         raw,
			SharedSecret:     hex.EncodeToString(shared),
			AdditionalData:   e.header(),
			SignedStringHash: hex.EncodeToString(sum[:]),
		}
	}
	base := mk("text", "alice", "bob", "01J9Z3K7Q2", 1767225600, "hello bob")
	vf.Valid = []validVector{
		base,
		mk("empty", "bob", "alice", "reply-1", 1767225601, ""),
		mk("unicode", "carol", "bob", "c_42", 1767225602, "héllo ✓ <b>&</b>"),
	}
	fromMallory := mk("mallory", "mallory", "bob", "m1", 1767225603, "trust me")

	alter := func(name, errName string, f func(e *Envelope)) {
		e, err := Parse(base.Envelope)
		if err != nil {
			t.Fatal(err)
		}
		f(e)
		raw, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		vf.Invalid = append(vf.Invalid, invalidVector{Name: name, To: "bob", Envelope: raw, Error: errName})
	}
	// resign recomputes the signature with signer's key over the altered fields.
	resign := func(e *Envelope, signer *Identity) {
		ct, _ := base64.StdEncoding.DecodeString(e.Ciphertext)
		e.Sig = hex.EncodeToString(ed25519.Sign(signer.Signing, []byte(signedString(e.header(), ct))))
	}
	flip := func(s string) string { // change the first hex digit or base64 symbol
		b := []byte(s)
		i := 0
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	alter("version 2", "unsupported_version", func(e *Envelope) { e.V = 2 })
	alter("from unregistered", "unknown_sender", func(e *Envelope) { e.From = "dave" })
	alter("from another handle", "sender_key_mismatch", func(e *Envelope) { e.From = "carol" })
	alter("to another handle", "wrong_recipient", func(e *Envelope) { e.To = "carol" })
	alter("id altered", "bad_signature", func(e *Envelope) { e.ID = "01J9Z3K7Q3" })
	alter("ts altered", "bad_signature", func(e *Envelope) { e.TS++ })
	alter("sender_key replaced", "sender_key_mismatch", func(e *Envelope) { e.SenderKey = ids["carol"].SigningKeyHex() })
	alter("recipient_key replaced", "wrong_recipient", func(e *Envelope) { e.RecipientKey = ids["carol"].EncryptionKeyHex() })
	alter("ephemeral_key replaced", "bad_signature", func(e *Envelope) { e.EphemeralKey = ids["carol"].EncryptionKeyHex() })
	alter("ciphertext altered", "bad_signature", func(e *Envelope) { e.Ciphertext = flip(e.Ciphertext) })
	alter("sig altered", "bad_signature", func(e *Envelope) { e.Sig = flip(e.Sig) })
	alter("ciphertext altered and re-signed by the sender", "decrypt", func(e *Envelope) {
		e.Ciphertext = flip(e.Ciphertext)
		resign(e, ids["alice"])
	})
	alter("claimed and re-signed by carol", "decrypt", func(e *Envelope) {
		e.From, e.SenderKey = "carol", ids["carol"].SigningKeyHex()
		resign(e, ids["carol"])
	})
	alter("sig missing", "malformed", func(e *Envelope) { e.Sig = "" })
	vf.Invalid = append(vf.Invalid,
		invalidVector{Name: "sealed by an unregistered sender", To: "bob", Envelope: fromMallory.Envelope, Error: "unknown_sender"},
		invalidVector{Name: "opened by another recipient", To: "alice", Envelope: base.Envelope, Error: "wrong_recipient"},
		invalidVector{Name: "unknown field", To: "bob", Envelope: json.RawMessage(bytes.Replace(base.Envelope, []byte(`{"v":1,`), []byte(`{"v":1,"x":0,`), 1)), Error: "malformed"},
		invalidVector{Name: "no version", To: "bob", Envelope: json.RawMessage(bytes.Replace(base.Envelope, []byte(`"v":1,`), nil, 1)), Error: "malformed"},
		invalidVector{Name: "version as string", To: "bob", Envelope: json.RawMessage(bytes.Replace(base.Envelope, []byte(`"v":1,`), []byte(`"v":"1",`), 1)), Error: "malformed"},
		invalidVector{Name: "not an object", To: "bob", Envelope: json.RawMessage(`"hello"`), Error: "malformed"},
	)
	out, err := json.MarshalIndent(vf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
