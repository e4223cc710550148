package identity

import (
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestValidateHandle(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		handle string
		ok     bool
	}{
		{"simple", "alice", true},
		{"digits", "42", true},
		{"digit first", "1alice", true},
		{"underscore and dash", "a_b-c", true},
		{"max length", strings.Repeat("a", 32), true},
		{"one char", "a", true},
		{"empty", "", false},
		{"too long", strings.Repeat("a", 33), false},
		{"dot", "a.b", false},
		{"star", "*", false},
		{"gt", ">", false},
		{"upper", "Alice", false},
		{"space", "a b", false},
		{"leading underscore", "_a", false},
		{"leading dash", "-a", false},
		{"unicode", "alicé", false},
		{"nul", "a\x00", false},
		{"slash", "a/b", false},
		{"tab", "a\tb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidateHandle(tt.handle)
			if tt.ok && err != nil {
				t.Fatalf("ValidateHandle(%q) = %v, want nil", tt.handle, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidHandle) {
				t.Fatalf("ValidateHandle(%q) = %v, want ErrInvalidHandle", tt.handle, err)
			}
		})
	}
}

func TestValidateClientID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "A-z_09", strings.Repeat("x", 64)} {
		if err := ValidateClientID(ok); err != nil {
			t.Errorf("ValidateClientID(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 65), "a.b", "a b", "é", "a:b"} {
		if err := ValidateClientID(bad); err == nil {
			t.Errorf("ValidateClientID(%q) = nil, want error", bad)
		}
	}
}

func TestParseKeysAndSignatures(t *testing.T) {
	t.Parallel()
	pub, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	good := hex.EncodeToString(pub)
	if _, err := ParseSigningKey(good); err != nil {
		t.Fatalf("ParseSigningKey: %v", err)
	}
	if _, err := ParseEncryptionKey(strings.Repeat("ab", 32)); err != nil {
		t.Fatalf("ParseEncryptionKey: %v", err)
	}
	if _, err := ParseSignature(strings.Repeat("0f", 64)); err != nil {
		t.Fatalf("ParseSignature: %v", err)
	}
	for name, s := range map[string]string{
		"upper":  strings.Repeat("AB", 32),
		"short":  good[:62],
		"long":   good + "00",
		"nonhex": strings.Repeat("zz", 32),
		"empty":  "",
	} {
		if _, err := ParseSigningKey(s); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSigningKey(%s) = %v, want ErrMalformed", name, err)
		}
	}
}

func TestCanonicalStrings(t *testing.T) {
	t.Parallel()
	tests := []struct{ got, want string }{
		{RegisterString("alice", "sk", "ek", 1700000000), "POST\n/v1/handles\nalice\nsk\nek\n1700000000"},
		{SendString("abc", 5), "POST\n/v1/messages\nabc\n5"},
		{PollString("alice", 0, 7), "GET\n/v1/inbox/alice\nsince=0\n7"},
		{StreamString("alice", 9), "GET\n/v1/inbox/alice/stream\n9"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}

func TestVerifyAndSkew(t *testing.T) {
	t.Parallel()
	pub, priv, _ := ed25519.GenerateKey(nil)
	pubHex := hex.EncodeToString(pub)
	msg := PollString("alice", 0, 100)
	sig, _ := ParseSignature(Sign(priv, msg))
	if err := Verify(pubHex, msg, sig); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := Verify(pubHex, msg+"x", sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Verify(other message) = %v, want ErrBadSignature", err)
	}
	// A signature for one endpoint never verifies for another.
	if err := Verify(pubHex, StreamString("alice", 100), sig); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("cross-endpoint replay = %v, want ErrBadSignature", err)
	}

	now := time.Unix(1000, 0)
	for _, tt := range []struct {
		ts int64
		ok bool
	}{{1000, true}, {880, true}, {1120, true}, {879, false}, {1121, false}, {0, false},
		{1000 + math.MinInt64, false}, {math.MinInt64, false}, {math.MaxInt64, false}} {
		err := CheckSkew(now, tt.ts, 120*time.Second)
		if tt.ok != (err == nil) {
			t.Errorf("CheckSkew(ts=%d) = %v, want ok=%v", tt.ts, err, tt.ok)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	t.Parallel()
	sig := strings.Repeat("0a", 64)
	tests := []struct {
		name   string
		header string
		handle string
		ts     int64
		ok     bool
	}{
		{"valid", "Kez alice:1700000000:" + sig, "alice", 1700000000, true},
		{"scheme case", "kez alice:1:" + sig, "alice", 1, true},
		{"empty", "", "", 0, false},
		{"other scheme", "Bearer alice:1:" + sig, "", 0, false},
		{"no colon", "Kez alice", "", 0, false},
		{"bad handle", "Kez Alice:1:" + sig, "", 0, false},
		{"negative ts", "Kez alice:-1:" + sig, "", 0, false},
		{"leading zero ts", "Kez alice:01700000000:" + sig, "", 0, false},
		{"zero ts", "Kez alice:0:" + sig, "alice", 0, true},
		{"huge ts", "Kez alice:99999999999999999999:" + sig, "", 0, false},
		{"short sig", "Kez alice:1:abcd", "", 0, false},
		{"extra field", "Kez alice:1:" + sig + ":x", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := ParseAuthorization(tt.header)
			if !tt.ok {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("ParseAuthorization(%q) = %v, want ErrMalformed", tt.header, err)
				}
				return
			}
			if err != nil || c.Handle != tt.handle || c.TS != tt.ts || len(c.Sig) != ed25519.SignatureSize {
				t.Fatalf("ParseAuthorization(%q) = %+v, %v", tt.header, c, err)
			}
		})
	}
}

func TestParseStreamAuth(t *testing.T) {
	t.Parallel()
	sig := strings.Repeat("0a", 64)
	c, err := ParseStreamAuth("bob", "12:"+sig)
	if err != nil || c.Handle != "bob" || c.TS != 12 {
		t.Fatalf("ParseStreamAuth = %+v, %v", c, err)
	}
	for _, bad := range []string{"", "12", ":" + sig, "12:", "x:" + sig, "12:" + sig + "00", "012:" + sig, "00:" + sig} {
		if _, err := ParseStreamAuth("bob", bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseStreamAuth(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}
