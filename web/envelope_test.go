package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/internal/browsertest"
	"github.com/kez-chat/kezd/web"
)

// vectors is client/envelope/testdata/vectors.json, the Go package's test vectors.
type vectors struct {
	Identities []struct {
		Handle           string `json:"handle"`
		SigningSeed      string `json:"signing_seed"`
		SigningKey       string `json:"signing_key"`
		EncryptionSecret string `json:"encryption_secret"`
		EncryptionKey    string `json:"encryption_key"`
	} `json:"identities"`
	Valid []struct {
		Name            string          `json:"name"`
		From            string          `json:"from"`
		To              string          `json:"to"`
		ID              string          `json:"id"`
		TS              int64           `json:"ts"`
		EphemeralSecret string          `json:"ephemeral_secret"`
		Plaintext       string          `json:"plaintext"`
		Envelope        json.RawMessage `json:"envelope"`
	} `json:"valid"`
	Invalid []struct {
		Name     string          `json:"name"`
		To       string          `json:"to"`
		Error    string          `json:"error"`
		Envelope json.RawMessage `json:"envelope"`
	} `json:"invalid"`
}

func loadVectors(t *testing.T) vectors {
	t.Helper()
	raw, err := os.ReadFile("../client/envelope/testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Valid) == 0 || len(v.Invalid) == 0 {
		t.Fatal("no vectors")
	}
	return v
}

// appModule starts a browser on the app (served by the web handler alone)
// and imports the app's module, whose envelope export is the code under
// test, as window.kez. It also defines window.ids (the vector identities,
// registered except mallory) and window.registry(handle).
func appModule(t *testing.T, v vectors) *browsertest.Profile {
	t.Helper()
	srv := httptest.NewServer(web.New(web.Config{}))
	t.Cleanup(srv.Close)
	b := browsertest.Start(t, "unit")
	b.Do(chromedp.Navigate(srv.URL + "/"))
	ids, _ := json.Marshal(v.Identities)
	browsertest.Eval[bool](b, fmt.Sprintf(`(async () => {
		window.kez = (await import(document.querySelector('script[type=module]').src)).envelope;
		window.ids = {};
		for (const i of %s) {
			ids[i.handle] = await kez.fromSecrets(i.handle, i.signing_seed, i.encryption_secret);
			if (ids[i.handle].signingKey !== i.signing_key || ids[i.handle].encryptionKey !== i.encryption_key) throw new Error('public keys of ' + i.handle);
		}
		window.registry = async (h) => (h === 'mallory' ? null : ids[h]?.signingKey ?? null);
		return true;
	})()`, ids))
	return b
}

// TestEnvelopeVectors runs the browser's envelope code against the Go
// package's vectors: sealing gives the same bytes, opening gives the
// plaintext, and every invalid envelope fails with its error.
func TestEnvelopeVectors(t *testing.T) {
	v := loadVectors(t)
	b := appModule(t, v)

	for _, tc := range v.Valid {
		t.Run("valid/"+tc.Name, func(t *testing.T) {
			var want bytes.Buffer
			if err := json.Compact(&want, tc.Envelope); err != nil {
				t.Fatal(err)
			}
			args, _ := json.Marshal(tc)
			sealed := browsertest.Eval[string](b, fmt.Sprintf(`(async () => {
				const v = %s;
				return kez.seal(ids[v.from], { handle: v.to, encryptionKey: ids[v.to].encryptionKey }, v.id, v.ts, v.plaintext, v.ephemeral_secret);
			})()`, args))
			if sealed != want.String() {
				t.Fatalf("sealed in the browser:\n%s\nthe Go package:\n%s", sealed, want.String())
			}
			opened := browsertest.Eval[string](b, fmt.Sprintf(`(async () => {
				const v = %s;
				const o = await kez.open(%q, ids[v.to], registry);
				if (o.from !== v.from || o.to !== v.to || o.id !== v.id || o.ts !== v.ts) throw new Error('opened header ' + JSON.stringify(o));
				return o.text;
			})()`, args, want.String()))
			if opened != tc.Plaintext {
				t.Fatalf("opened %q, want %q", opened, tc.Plaintext)
			}
		})
	}

	for _, tc := range v.Invalid {
		t.Run("invalid/"+tc.Name, func(t *testing.T) {
			got := browsertest.Eval[string](b, fmt.Sprintf(`(async () => {
				try {
					await kez.open(%q, ids[%q], registry);
					return 'opened';
				} catch (err) {
					return err instanceof kez.EnvelopeError ? err.code : 'not an EnvelopeError: ' + err;
				}
			})()`, string(tc.Envelope), tc.To))
			if got != tc.Error {
				t.Fatalf("open = %s, want %s", got, tc.Error)
			}
		})
	}
}

// TestKeyFileFormat: the browser writes a key file byte for byte as
// `kez keygen` does (json.MarshalIndent, two spaces, a final newline) and
// refuses one whose public keys are not those of its secrets.
func TestKeyFileFormat(t *testing.T) {
	v := loadVectors(t)
	b := appModule(t, v)
	alice := v.Identities[0]
	want, err := json.MarshalIndent(struct {
		Handle           string `json:"handle"`
		SigningSeed      string `json:"signing_seed"`
		EncryptionSecret string `json:"encryption_secret"`
		SigningKey       string `json:"signing_key"`
		EncryptionKey    string `json:"encryption_key"`
		Server           string `json:"server,omitempty"`
	}{alice.Handle, alice.SigningSeed, alice.EncryptionSecret, alice.SigningKey, alice.EncryptionKey, "http://127.0.0.1:8080"}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got := browsertest.Eval[string](b, `kez.keyFile(ids.alice, 'http://127.0.0.1:8080')`)
	if got != string(want)+"\n" {
		t.Fatalf("browser key file:\n%s\nkez keygen's format:\n%s", got, want)
	}
	back := browsertest.Eval[string](b, fmt.Sprintf(`kez.parseKeyFile(%q).then((id) => id.handle + ' ' + id.signingKey + ' ' + id.server)`, got))
	if back != alice.Handle+" "+alice.SigningKey+" http://127.0.0.1:8080" {
		t.Fatalf("parsed back: %s", back)
	}
	bad := browsertest.Eval[string](b, fmt.Sprintf(`kez.parseKeyFile(%q.replace(%q, %q)).then(() => 'accepted', (e) => e.message)`, got, alice.SigningKey, v.Identities[1].SigningKey))
	if bad != "key file: public keys do not match the secrets" {
		t.Fatalf("a key file with another public key: %s", bad)
	}
	// A stored identity's keys are non-extractable.
	extractable := browsertest.Eval[bool](b, `ids.alice.signKey.extractable || ids.alice.encKey.extractable`)
	if extractable {
		t.Fatal("the identity's private keys are extractable")
	}
}
