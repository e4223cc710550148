package identity

import (
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"filippo.io/edwards25519"
)

// Ed25519 encodings that must be refused: the eight points of small order,
// and non-canonical encodings (y ≥ p, or x = 0 with the sign bit set).
var weakSigningKeys = []struct{ name, hex string }{
	{"identity", "01" + strings.Repeat("00", 31)},
	{"identity, sign bit set", "01" + strings.Repeat("00", 30) + "80"},
	{"identity, y = p+1", "ee" + strings.Repeat("ff", 30) + "7f"},
	{"order 2", "ec" + strings.Repeat("ff", 30) + "7f"},
	{"order 2, sign bit set", "ec" + strings.Repeat("ff", 31)},
	{"order 4", strings.Repeat("00", 32)},
	{"order 4, negative x", strings.Repeat("00", 31) + "80"},
	{"order 4, y = p", "ed" + strings.Repeat("ff", 30) + "7f"},
	{"order 8 (a)", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"},
	{"order 8 (b)", "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"},
	{"order 8 (c)", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"},
	{"order 8 (d)", "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"},
	{"large order, y = p+3", "f0" + strings.Repeat("ff", 30) + "7f"},
	{"not on the curve", "02" + strings.Repeat("00", 31)},
}

func TestCheckSigningKeyRefusesWeakKeys(t *testing.T) {
	t.Parallel()
	for _, k := range weakSigningKeys {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseSigningKey(k.hex); !errors.Is(err, ErrWeakKey) || !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseSigningKey(%s) = %v, want ErrWeakKey", k.hex, err)
			}
		})
	}
}

// The small-order vectors above really are of small order, and the
// non-canonical ones really decode: the test checks what it says it does.
func TestWeakSigningKeyVectors(t *testing.T) {
	t.Parallel()
	for _, k := range weakSigningKeys {
		b, _ := hex.DecodeString(k.hex)
		p, err := new(edwards25519.Point).SetBytes(b)
		if k.name == "not on the curve" {
			if err == nil {
				t.Errorf("%s decodes", k.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s does not decode: %v", k.name, err)
			continue
		}
		small := new(edwards25519.Point).MultByCofactor(p).Equal(edwards25519.NewIdentityPoint()) == 1
		canonical := hex.EncodeToString(p.Bytes()) == k.hex
		if canonical && !small {
			t.Errorf("%s is canonical and of large order: not weak", k.name)
		}
	}
}

func TestCheckSigningKeyAcceptsRealKeys(t *testing.T) {
	t.Parallel()
	for range 64 {
		pub, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if err := CheckSigningKey(pub); err != nil {
			t.Fatalf("CheckSigningKey(%x) = %v", pub, err)
		}
	}
	// A point of mixed order (a real key plus a torsion point) is not of
	// small order: PROTOCOL.md refuses only 8·P = identity.
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	a, _ := new(edwards25519.Point).SetBytes(pub)
	torsion, _ := hex.DecodeString(weakSigningKeys[8].hex)
	tp, _ := new(edwards25519.Point).SetBytes(torsion)
	mixed := new(edwards25519.Point).Add(a, tp).Bytes()
	if err := CheckSigningKey(mixed); err != nil {
		t.Fatalf("mixed-order key refused: %v", err)
	}
}

// The constant signature R = identity, S = 0 verifies for every message
// under the identity key; Verify must refuse it.
func TestVerifyRefusesWeakKey(t *testing.T) {
	t.Parallel()
	identityKey := weakSigningKeys[0].hex
	sig, _ := hex.DecodeString("01" + strings.Repeat("00", 63))
	if !ed25519.Verify(mustHex(t, identityKey), []byte("anything"), sig) {
		t.Fatal("precondition: crypto/ed25519 accepts the constant signature")
	}
	if err := Verify(identityKey, "anything", sig); err == nil {
		t.Fatal("Verify accepted a signature by the identity key")
	}
}

func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCheckEncryptionKey(t *testing.T) {
	t.Parallel()
	weak := []struct{ name, hex string }{
		{"all zero", strings.Repeat("00", 32)},
		{"one", "01" + strings.Repeat("00", 31)},
		{"p-1 (order 2)", "ec" + strings.Repeat("ff", 30) + "7f"},
		{"p (zero)", "ed" + strings.Repeat("ff", 30) + "7f"},
		{"p+1 (one)", "ee" + strings.Repeat("ff", 30) + "7f"},
		{"order 8 (a)", "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"},
		{"order 8 (b)", "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"},
		{"zero, top bit set", strings.Repeat("00", 31) + "80"},
		{"order 8 (a), top bit set", "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880"},
	}
	for _, k := range weak {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			if _, err := ParseEncryptionKey(k.hex); !errors.Is(err, ErrWeakKey) {
				t.Fatalf("ParseEncryptionKey(%s) = %v, want ErrWeakKey", k.hex, err)
			}
		})
	}
	t.Run("real keys", func(t *testing.T) {
		t.Parallel()
		for range 64 {
			k, err := ecdh.X25519().GenerateKey(rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseEncryptionKey(hex.EncodeToString(k.PublicKey().Bytes())); err != nil {
				t.Fatalf("real key refused: %v", err)
			}
		}
	})
}
