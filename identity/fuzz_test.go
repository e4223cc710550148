package identity

import (
	"strings"
	"testing"
)

// The fuzz targets check the parsers' promises on hostile input: they never
// panic, and whatever they accept is canonical (re-validates and round-trips).

func FuzzValidateHandle(f *testing.F) {
	for _, s := range []string{"alice", "a.b", "*", ">", "Alice", "a b", strings.Repeat("a", 33), "", "_x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		if ValidateHandle(h) != nil {
			return
		}
		if len(h) < 1 || len(h) > MaxHandleLen {
			t.Fatalf("accepted length %d", len(h))
		}
		// An accepted handle is one NATS subject token.
		if strings.ContainsAny(h, ".*> \t\r\n") || strings.ToLower(h) != h {
			t.Fatalf("accepted %q", h)
		}
	})
}

func FuzzParseAuthorization(f *testing.F) {
	sig := strings.Repeat("0a", 64)
	for _, s := range []string{"Kez alice:1700000000:" + sig, "Kez :1:" + sig, "Kez a:b:c", "kez  a:1:" + sig, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		c, err := ParseAuthorization(header)
		if err != nil {
			return
		}
		if ValidateHandle(c.Handle) != nil || c.TS < 0 || len(c.Sig) != 64 {
			t.Fatalf("accepted %q as %+v", header, c)
		}
	})
}

func FuzzParseStreamAuth(f *testing.F) {
	sig := strings.Repeat("0a", 64)
	for _, s := range []string{"1700000000:" + sig, "1:", ":", "1:" + sig + "0", "%3A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		c, err := ParseStreamAuth("alice", v)
		if err != nil {
			return
		}
		if c.TS < 0 || len(c.Sig) != 64 || c.Handle != "alice" {
			t.Fatalf("accepted %q as %+v", v, c)
		}
	})
}
