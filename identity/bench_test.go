package identity

import (
	"crypto/ed25519"
	"encoding/hex"
	"testing"
)

// BenchmarkVerify measures a request's signature check with the weak-key
// check (Verify) against crypto/ed25519 alone, in one run.
func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	msg := SendString("00", 1)
	sig := ed25519.Sign(priv, []byte(msg))
	pubHex := hex.EncodeToString(pub)
	b.Run("ed25519_only", func(b *testing.B) {
		for b.Loop() {
			if !ed25519.Verify(pub, []byte(msg), sig) {
				b.Fatal("does not verify")
			}
		}
	})
	b.Run("with_key_check", func(b *testing.B) {
		for b.Loop() {
			if err := Verify(pubHex, msg, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkCheckSigningKey(b *testing.B) {
	pub, _, _ := ed25519.GenerateKey(nil)
	for b.Loop() {
		if err := CheckSigningKey(pub); err != nil {
			b.Fatal(err)
		}
	}
}
