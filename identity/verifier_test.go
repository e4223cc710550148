package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"testing"

	"filippo.io/edwards25519"
)

// TestVerifierMatchesVerify holds Verifier to crypto/ed25519's answers:
// good signatures, every kind of tampering, and keys and signatures at the
// edges of the encoding (the identity point, small-order and off-curve
// keys, a scalar S at or past the group order).
func TestVerifierMatchesVerify(t *testing.T) {
	t.Parallel()
	v := NewVerifier(4) // small: forgetting keys is exercised too
	rng := rand.New(rand.NewPCG(1, 2))
	msg := "POST /v1/messages 1733000000 e3b0c442"
	check := func(name, pub, msg string, sig []byte) {
		t.Helper()
		want := Verify(pub, msg, sig)
		for range 3 { // the key unseen, then seen once (now precomputed), then precomputed
			if got := v.Verify(pub, msg, sig); (got == nil) != (want == nil) {
				t.Fatalf("%s: Verifier says %v, Verify says %v (key %s, sig %x)", name, got, want, pub, sig)
			}
		}
	}
	for i := range 40 {
		var seed [ed25519.SeedSize]byte
		for j := range seed {
			seed[j] = byte(rng.Uint32())
		}
		priv := ed25519.NewKeyFromSeed(seed[:])
		pub := hex.EncodeToString(priv.Public().(ed25519.PublicKey))
		sig := ed25519.Sign(priv, []byte(msg))
		check("good", pub, msg, sig)
		check("other message", pub, msg+"x", sig)
		bad := append([]byte(nil), sig...)
		bad[rng.IntN(len(bad))] ^= 1 << rng.IntN(8)
		check("flipped bit", pub, msg, bad)
		check("short", pub, msg, sig[:63])
		// S + L: the same signature with a non-canonical scalar, which
		// crypto/ed25519 rejects.
		check("S+L", pub, msg, addOrder(sig))
		wrongKey := []byte(priv.Public().(ed25519.PublicKey))
		wrongKey = append([]byte(nil), wrongKey...)
		wrongKey[i%32] ^= 0x10
		check("other key", hex.EncodeToString(wrongKey), msg, sig)
	}
	zero := make([]byte, 64)
	identity := "0100000000000000000000000000000000000000000000000000000000000000"
	edges := []string{
		identity,
		"0000000000000000000000000000000000000000000000000000000000000000", // small order
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // -1: non-canonical y
		"0200000000000000000000000000000000000000000000000000000000000000", // y = 2: not on the curve
		"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a", // small order, Wycheproof
	}
	// Every encoding with y ≥ p (y = p + t), with either sign bit: none is
	// canonical, and CheckSigningKey refuses them whether or not they
	// decode to a point.
	for t := range 19 {
		for _, sign := range []byte{0, 0x80} {
			k := hexBytes("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f")
			k[0] += byte(t)
			k[31] = k[31]&0x7f | sign
			edges = append(edges, hex.EncodeToString(k))
		}
	}
	for _, k := range edges {
		check("edge key, zero sig", k, msg, zero)
		sig := append(hexBytes(identity), make([]byte, 32)...) // R = identity, S = 0
		check("edge key, R identity S 0", k, msg, sig)
	}
	if err := v.Verify("not hex", msg, zero); err == nil {
		t.Error("a malformed key verified")
	}
	if len(v.keys) > 4 {
		t.Errorf("remembers %d keys, bound 4", len(v.keys))
	}
	one := NewVerifier(1)
	for i := range 3 {
		priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i)}, ed25519.SeedSize))
		if err := one.Verify(hex.EncodeToString(priv.Public().(ed25519.PublicKey)), msg, ed25519.Sign(priv, []byte(msg))); err != nil {
			t.Fatal(err)
		}
	}
	if len(one.keys) > 1 {
		t.Errorf("a Verifier of one key remembers %d", len(one.keys))
	}
}

func hexBytes(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// addOrder returns sig with L, the group order, added to its scalar S
// (little-endian, the last 32 bytes).
func addOrder(sig []byte) []byte {
	l := hexBytes("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
	out := append([]byte(nil), sig...)
	carry := 0
	for i := range 32 {
		s := int(out[32+i]) + int(l[i]) + carry
		out[32+i], carry = byte(s), s>>8
	}
	return out
}

// BenchmarkVerifierFirstUse is Verifier with a key it has not seen, as for
// a stream opened in a reconnect storm of many handles.
func BenchmarkVerifierFirstUse(b *testing.B) {
	const keys = 512
	pubs, sigs := make([]string, keys), make([][]byte, keys)
	msg := SendString("00", 1)
	for i := range keys {
		pub, priv, _ := ed25519.GenerateKey(nil)
		pubs[i], sigs[i] = hex.EncodeToString(pub), ed25519.Sign(priv, []byte(msg))
	}
	var v *Verifier
	i := 0
	for b.Loop() {
		if i%keys == 0 {
			v = NewVerifier(DefaultVerifierKeys)
		}
		if err := v.Verify(pubs[i%keys], msg, sigs[i%keys]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkVerifier is Verifier with the key remembered, as for a sender's
// third request on; BenchmarkVerify/with_key_check is the same check
// through crypto/ed25519.
func BenchmarkVerifier(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	key := hex.EncodeToString(pub)
	msg := SendString("00", 1)
	sig := ed25519.Sign(priv, []byte(msg))
	v := NewVerifier(DefaultVerifierKeys)
	for b.Loop() {
		if err := v.Verify(key, msg, sig); err != nil {
			b.Fatal(err)
		}
	}
}

// TestVerifierMixedTorsionKeys: a key A = [a]B + T with T of small order
// is not itself of small order, so CheckSigningKey takes it, and
// crypto/ed25519's cofactorless check accepts a signature under it exactly
// when [k]T vanishes (k the signature's hash). Verifier must accept and
// refuse the same signatures, with T of order 2, 4 and 8, and with a key it
// has seen (and precomputed) as well as a new one: each key signs several
// messages.
func TestVerifierMixedTorsionKeys(t *testing.T) {
	t.Parallel()
	v := NewVerifier(DefaultVerifierKeys)
	rng := rand.New(rand.NewPCG(3, 4))
	scalar := func() *edwards25519.Scalar {
		var b [64]byte
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		s, err := new(edwards25519.Scalar).SetUniformBytes(b[:])
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		order   int
		torsion string
	}{
		{2, "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"}, // (0, -1)
		{4, "0000000000000000000000000000000000000000000000000000000000000000"}, // y = 0
		{8, "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"},
	} {
		T, err := new(edwards25519.Point).SetBytes(hexBytes(tc.torsion))
		if err != nil {
			t.Fatal(err)
		}
		accepted, refused := 0, 0
		for i := 0; accepted < 4 || refused < 4; i++ {
			if i > 100 {
				t.Fatalf("order %d: after %d keys %d signatures accepted, %d refused", tc.order, i, accepted, refused)
			}
			a := scalar()
			A := new(edwards25519.Point).Add(new(edwards25519.Point).ScalarBaseMult(a), T)
			pub := A.Bytes()
			key := hex.EncodeToString(pub)
			for j := range 6 {
				msg := fmt.Sprintf("POST /v1/messages %d e3b0c442 %d", i, j)
				r := scalar()
				R := new(edwards25519.Point).ScalarBaseMult(r).Bytes()
				h := sha512.New()
				h.Write(R)
				h.Write(pub)
				h.Write([]byte(msg))
				k, err := new(edwards25519.Scalar).SetUniformBytes(h.Sum(nil))
				if err != nil {
					t.Fatal(err)
				}
				sig := append(R, new(edwards25519.Scalar).MultiplyAdd(k, a, r).Bytes()...)
				want := Verify(key, msg, sig)
				if want == nil {
					accepted++
				} else {
					refused++
				}
				if got := v.Verify(key, msg, sig); (got == nil) != (want == nil) {
					t.Fatalf("order %d, key %s, signature %d: Verifier says %v, Verify says %v", tc.order, key, j, got, want)
				}
			}
		}
	}
}
