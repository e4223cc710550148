package web_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/internal/browsertest"
	"github.com/kez-chat/kezd/protocol"
)

// savedKeys is a key file as the browser saves it (the format of kez
// rotate: the current keys and the previous sets, oldest first).
type savedKeys struct {
	Handle           string `json:"handle"`
	SigningSeed      string `json:"signing_seed"`
	EncryptionSecret string `json:"encryption_secret"`
	SigningKey       string `json:"signing_key"`
	EncryptionKey    string `json:"encryption_key"`
	Server           string `json:"server"`
	Previous         []struct {
		SigningSeed      string `json:"signing_seed"`
		EncryptionSecret string `json:"encryption_secret"`
		SigningKey       string `json:"signing_key"`
		EncryptionKey    string `json:"encryption_key"`
	} `json:"previous"`
}

// saveKeyFile saves p's key file and returns its path, bytes and identity.
func (p *person) saveKeyFile() (string, []byte, *savedKeys, *envelope.Identity) {
	p.t.Helper()
	path := p.Download(chromedp.Click(chromedp.ID("export")))
	data, err := os.ReadFile(path)
	if err != nil {
		p.t.Fatal(err)
	}
	var k savedKeys
	if err := json.Unmarshal(data, &k); err != nil {
		p.t.Fatalf("key file: %v\n%s", err, data)
	}
	return path, data, &k, identityOf(p.t, k.Handle, k.SigningSeed, k.EncryptionSecret)
}

func identityOf(t *testing.T, handle, seedHex, secretHex string) *envelope.Identity {
	t.Helper()
	seed, err1 := hex.DecodeString(seedHex)
	secret, err2 := hex.DecodeString(secretHex)
	if err1 != nil || err2 != nil {
		t.Fatalf("key file secrets: %v %v", err1, err2)
	}
	id, err := envelope.NewIdentity(handle, seed, secret)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// openSettings opens the settings panel from the keyboard.
func (p *person) openSettings() {
	p.t.Helper()
	browsertest.Eval[bool](p.Profile, `(document.querySelector('#settings summary').focus(), true)`)
	p.Do(browsertest.Enter())
	p.waitFor(`document.getElementById('settings').open`)
}

// sealTo sends text from -> to sealed to the encryption key of peer, which
// may be one the recipient no longer has registered.
func sealTo(t *testing.T, c *client.Client, from *envelope.Identity, peer envelope.Peer, text string) {
	t.Helper()
	id := client.NewID()
	env, err := envelope.Seal(from, peer, id, time.Now().Unix(), []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SendEnvelope(t.Context(), from, peer.Handle, id, env); err != nil {
		t.Fatal(err)
	}
}

// TestRotateKeysInBrowser: the browser rotates its keys from the settings
// (keyboard only); the server takes the new keys and refuses the old ones;
// messages to the new key are read, and so are messages sealed to the old
// key, also after a reload; the new key file is kez rotate's and works in
// the CLI.
func TestRotateKeysInBrowser(t *testing.T) {
	srv, c, bob, alice := bobInGoAliceInBrowser(t)
	_, _, _, old := alice.saveKeyFile()
	if _, err := c.Send(t.Context(), bob, "alice", []byte("before the rotation")); err != nil {
		t.Fatal(err)
	}
	alice.openConversation("bob", "bob")
	alice.messages(1)

	alice.openSettings()
	browsertest.Eval[bool](alice.Profile, `(document.getElementById('rotate').focus(), true)`)
	alice.Do(browsertest.Enter())
	text := alice.waitFor(`document.getElementById('backup-text').textContent.includes('Your keys were rotated') && document.activeElement.id === 'export' && document.getElementById('backup-text').textContent`)
	if !strings.Contains(text, "previous keys") {
		t.Fatalf("after rotating, the page says %s", text)
	}
	alice.waitLive()

	fresh, err := client.New(srv.URL) // no cached keys
	if err != nil {
		t.Fatal(err)
	}
	reg, err := fresh.Lookup(t.Context(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if reg.SigningKey == old.SigningKeyHex() || reg.EncryptionKey == old.EncryptionKeyHex() {
		t.Fatalf("the server still has the old keys: %+v", reg)
	}
	if fp := alice.waitFor(`document.getElementById('my-fp').textContent`); strings.ReplaceAll(fp, " ", "") != `"`+reg.SigningKey+`"` {
		t.Fatalf("the page shows fingerprint %s, the server has %s", fp, reg.SigningKey)
	}

	// The new key file: the new keys, the old ones as previous.
	path, _, k, next := alice.saveKeyFile()
	if k.SigningKey != reg.SigningKey || k.EncryptionKey != reg.EncryptionKey || k.Server != srv.URL {
		t.Fatalf("key file %+v, server %+v", k, reg)
	}
	if len(k.Previous) != 1 || k.Previous[0].SigningKey != old.SigningKeyHex() || k.Previous[0].EncryptionKey != old.EncryptionKeyHex() ||
		identityOf(t, "alice", k.Previous[0].SigningSeed, k.Previous[0].EncryptionSecret).EncryptionKeyHex() != old.EncryptionKeyHex() {
		t.Fatalf("key file previous = %+v, want alice's old keys", k.Previous)
	}

	// The old key is refused; the new one works.
	if _, err := fresh.Poll(t.Context(), old, client.PollOptions{}); !client.IsCode(err, protocol.CodeBadSignature) {
		t.Fatalf("poll with the old key: %v, want bad_signature", err)
	}
	if _, err := fresh.Send(t.Context(), old, "bob", []byte("with the old key")); !client.IsCode(err, protocol.CodeBadSignature) {
		t.Fatalf("send with the old key: %v, want bad_signature", err)
	}
	if _, err := fresh.Poll(t.Context(), next, client.PollOptions{}); err != nil {
		t.Fatalf("poll with the new key: %v", err)
	}

	// To the new key, and sealed to the old one.
	if _, err := fresh.Send(t.Context(), bob, "alice", []byte("to the new key")); err != nil {
		t.Fatal(err)
	}
	sealTo(t, fresh, bob, old.Peer(), "sealed to the old key")
	alice.send("from the new key")
	checkConversation(t, "alice", alice.messages(4), []shown{
		{Dir: "in", Text: "before the rotation"}, {Dir: "in", Text: "to the new key"},
		{Dir: "in", Text: "sealed to the old key"}, {Dir: "out", Text: "from the new key"},
	})
	page, err := fresh.Poll(t.Context(), bob, client.PollOptions{})
	if err != nil || len(page.Messages) != 1 {
		t.Fatalf("bob's inbox: %+v, %v", page, err)
	}
	if o, err := fresh.Open(t.Context(), bob, page.Messages[0]); err != nil || string(o.Plaintext) != "from the new key" {
		t.Fatalf("bob opens alice's message: %v, %v", o, err)
	}

	// After a reload the stored identity is the rotated one, old key and all.
	alice.Do(chromedp.Reload())
	alice.waitLive()
	sealTo(t, fresh, bob, old.Peer(), "old key, after the reload")
	alice.openConversation("bob", "bob")
	got := alice.messages(5)
	if got[4].Text != "old key, after the reload" {
		t.Fatalf("after the reload: %+v", got)
	}

	// The CLI reads everything with the new key file.
	asAlice := newCLI(t, srv)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(asAlice.keyPath("alice")), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(asAlice.keyPath("alice"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := asAlice.kez("inbox", "--as", "alice")
	for _, m := range []string{"before the rotation", "to the new key", "sealed to the old key", "old key, after the reload"} {
		if !strings.Contains(out, m) {
			t.Fatalf("kez inbox with the browser's rotated key file lacks %q:\n%s", m, out)
		}
	}

	// A second rotation, after the reload: the keys from before it are
	// stored non-extractable, so the new key file holds only the new keys
	// and the page says to keep the old file; every older key still opens
	// what was sealed to it.
	alice.openSettings()
	alice.Do(chromedp.Click(chromedp.ID("rotate")))
	text = alice.waitFor(`document.getElementById('backup-text').textContent.includes('Your keys were rotated') && document.getElementById('backup-text').textContent`)
	if !strings.Contains(text, "keep your old key file") {
		t.Fatalf("after rotating a stored identity, the page says %s", text)
	}
	alice.waitLive()
	_, _, k3, third := alice.saveKeyFile()
	if len(k3.Previous) != 0 {
		t.Fatalf("the key file of a stored identity's rotation has previous keys %+v", k3.Previous)
	}
	if _, err := fresh.Poll(t.Context(), next, client.PollOptions{}); !client.IsCode(err, client.CodeBadSignature) {
		t.Fatalf("poll with the second keys after the second rotation: %v, want bad_signature", err)
	}
	sealTo(t, fresh, bob, old.Peer(), "to the first keys")
	sealTo(t, fresh, bob, next.Peer(), "to the second keys")
	sealTo(t, fresh, bob, third.Peer(), "to the third keys")
	got = alice.messages(8)
	for i, want := range []string{"to the first keys", "to the second keys", "to the third keys"} {
		if got[5+i].Text != want {
			t.Fatalf("after the second rotation, message %d = %q, want %q: %+v", 5+i, got[5+i].Text, want, got)
		}
	}
}

// TestDeleteAccountInBrowser: deleting the account takes the handle typed
// out; then the server has no such handle, and the browser has forgotten it
// and is back at the start screen, also after a reload.
func TestDeleteAccountInBrowser(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	alice := newPerson(t, srv, "alice")
	alice.create("alice")
	alice.openSettings()

	// Not confirmed: nothing is deleted, and the page says why.
	alice.Do(chromedp.SendKeys(chromedp.ID("delete-confirm"), "alicia"), browsertest.Enter())
	if msg := alice.waitFor(`!document.getElementById('error').hidden && document.getElementById('error').textContent`); !strings.Contains(msg, "type its handle, alice") {
		t.Fatalf("unconfirmed deletion says %s", msg)
	}
	if _, err := c.Lookup(t.Context(), "alice"); err != nil {
		t.Fatalf("after an unconfirmed deletion: %v", err)
	}

	browsertest.Eval[bool](alice.Profile, `(document.getElementById('delete-confirm').value = '', true)`)
	alice.Do(chromedp.SendKeys(chromedp.ID("delete-confirm"), "alice"), browsertest.Enter())
	notice := alice.waitFor(`!document.getElementById('welcome').hidden && document.getElementById('app').hidden && document.activeElement.id === 'handle-input' && document.getElementById('notice').textContent`)
	if !strings.Contains(notice, "alice was deleted") {
		t.Fatalf("after deleting: %s", notice)
	}
	if _, err := c.Lookup(t.Context(), "alice"); !client.IsCode(err, protocol.CodeUnknownHandle) {
		t.Fatalf("lookup after deleting: %v, want unknown_handle", err)
	}
	alice.Do(chromedp.Reload())
	alice.waitFor(`!document.getElementById('welcome').hidden && document.getElementById('app').hidden`)
	if n := browsertest.Eval[string](alice.Profile, `new Promise((resolve) => { const r = indexedDB.open('kez'); r.onsuccess = () => { const tx = r.result.transaction(['meta', 'contacts', 'messages']); const counts = []; for (const s of ['meta', 'contacts', 'messages']) { const q = tx.objectStore(s).count(); q.onsuccess = () => counts.push(q.result); } tx.oncomplete = () => resolve(counts.join(',')); }; })`); n != "0,0,0" {
		t.Fatalf("IndexedDB still holds %s records (meta, contacts, messages)", n)
	}
}

// TestContactRotatedBeforeReading: a message a contact sealed before it
// rotated its keys still opens in the browser (the sender's key as of the
// message, ?at= its sent_at), as does one sealed after.
func TestContactRotatedBeforeReading(t *testing.T) {
	_, c, bob, alice := bobInGoAliceInBrowser(t)
	alice.openConversation("bob", "bob") // alice has bob's first keys
	alice.Do(offline(true))
	alice.waitStatus("reconnecting")
	if _, err := c.Send(t.Context(), bob, "alice", []byte("sealed before bob rotated")); err != nil {
		t.Fatal(err)
	}
	next, err := envelope.Generate("bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Rotate(t.Context(), bob, next); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(t.Context(), next, "alice", []byte("sealed after bob rotated")); err != nil {
		t.Fatal(err)
	}
	alice.Do(offline(false))
	alice.waitStatus("live")
	checkConversation(t, "alice", alice.messages(2), []shown{
		{Dir: "in", Text: "sealed before bob rotated"}, {Dir: "in", Text: "sealed after bob rotated"},
	})
}

// TestImportRotatedKeyFile: a key file that `kez rotate` wrote imports into
// the browser with its previous keys, so messages sealed to the keys from
// before the rotation open; the browser saves it back byte for byte; a file
// whose previous keys are not those of their secrets is refused in words.
func TestImportRotatedKeyFile(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	bob := kezdtest.Register(t, t.Context(), c, "bob")
	carol := newCLI(t, srv)
	carol.kez("keygen", "carol")
	carol.kez("register", "carol")
	if _, err := c.Send(t.Context(), bob, "carol", []byte("to carol's first keys")); err != nil {
		t.Fatal(err)
	}
	carol.kez("rotate", "--as", "carol")
	fresh, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Send(t.Context(), bob, "carol", []byte("to carol's new keys")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(carol.keyPath("carol"))
	if err != nil {
		t.Fatal(err)
	}
	var k savedKeys
	if err := json.Unmarshal(data, &k); err != nil || len(k.Previous) != 1 {
		t.Fatalf("kez rotate's key file: %v\n%s", err, data)
	}

	browser := newPerson(t, srv, "carol")
	tampered := filepath.Join(t.TempDir(), "carol.json")
	if err := os.WriteFile(tampered, []byte(strings.Replace(string(data), k.Previous[0].SigningKey, bob.SigningKeyHex(), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	browser.Do(
		chromedp.WaitVisible(chromedp.ID("import-file")),
		chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{tampered}),
	)
	if msg := browser.waitFor(`!document.getElementById('error').hidden && document.getElementById('error').textContent`); !strings.Contains(msg, "previous keys 1: public keys do not match the secrets") {
		t.Fatalf("a key file with wrong previous keys: %s", msg)
	}

	browser.Do(chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{carol.keyPath("carol")}))
	browser.waitLive()
	browser.openConversation("bob", "bob")
	checkConversation(t, "carol", browser.messages(2), []shown{{Dir: "in", Text: "to carol's first keys"}, {Dir: "in", Text: "to carol's new keys"}})
	if _, saved, _, _ := browser.saveKeyFile(); string(saved) != string(data) {
		t.Fatalf("the browser saves the key file as\n%s\nkez rotate wrote\n%s", saved, data)
	}
}

// failRequests makes the tab's requests to urlPattern fail at stage: at the
// request stage they never reach the server; at the response stage the
// server has handled them and the answer is lost. It stops with the test.
func failRequests(t *testing.T, p *person, urlPattern string, stage fetch.RequestStage) {
	t.Helper()
	ctx, cancel := context.WithCancel(p.Ctx)
	events := chromedp.Events(ctx, fetch.RequestPaused)
	p.Do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: urlPattern, RequestStage: stage}}})
		return err
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev, err := range events {
			if err != nil {
				return
			}
			chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
				_, err := cdp.Call(ctx, tg, fetch.FailRequest, fetch.FailRequestParams{RequestID: ev.RequestID, ErrorReason: network.ErrorReasonConnectionReset})
				return err
			}))
		}
	}()
	t.Cleanup(func() {
		p.Do(chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, fetch.Disable, cdp.Empty{})
			return err
		}))
		cancel()
		<-done
	})
}

// TestRotateWhenTheAnswerIsLost: a rotation that never reached the server
// changes nothing and says why; one the server made but whose answer was
// lost is found out (the registered keys are the new ones) and completed,
// so the browser keeps the only keys that open the handle.
func TestRotateWhenTheAnswerIsLost(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	alice := newPerson(t, srv, "alice")
	alice.create("alice")
	_, _, _, old := alice.saveKeyFile()
	alice.openSettings()

	t.Run("not sent", func(t *testing.T) {
		failRequests(t, alice, "*/v1/handles/alice/keys", fetch.RequestStageRequest)
		alice.Do(chromedp.Click(chromedp.ID("rotate")))
		if msg := alice.waitFor(`!document.getElementById('error').hidden && document.getElementById('error').textContent`); !strings.Contains(msg, "cannot be reached") {
			t.Fatalf("a rotation that did not reach the server says %s", msg)
		}
		reg, err := c.Lookup(t.Context(), "alice")
		if err != nil || reg.SigningKey != old.SigningKeyHex() {
			t.Fatalf("after a rotation that did not reach the server: %+v, %v", reg, err)
		}
		if fp := alice.waitFor(`document.getElementById('my-fp').textContent`); strings.ReplaceAll(fp, " ", "") != `"`+old.SigningKeyHex()+`"` {
			t.Fatalf("the page shows fingerprint %s, the server has %s", fp, old.SigningKeyHex())
		}
	})
	alice.waitFor(`!document.getElementById('rotate').disabled`)
	t.Run("answer lost", func(t *testing.T) {
		failRequests(t, alice, "*/v1/handles/alice/keys", fetch.RequestStageResponse)
		alice.Do(chromedp.Click(chromedp.ID("rotate")))
		alice.waitFor(`document.getElementById('backup-text').textContent.includes('Your keys were rotated')`)
	})
	fresh, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := fresh.Lookup(t.Context(), "alice")
	if err != nil || reg.SigningKey == old.SigningKeyHex() {
		t.Fatalf("after the rotation whose answer was lost: %+v, %v", reg, err)
	}
	_, _, k, next := alice.saveKeyFile()
	if k.SigningKey != reg.SigningKey || len(k.Previous) != 1 || k.Previous[0].SigningKey != old.SigningKeyHex() {
		t.Fatalf("key file %+v, server %+v", k, reg)
	}
	if _, err := fresh.Send(t.Context(), next, "alice", []byte("to myself, new keys")); err != nil {
		t.Fatal(err)
	}
	alice.waitLive()
	alice.openConversation("alice", "alice")
	checkConversation(t, "alice", alice.messages(1), []shown{{Dir: "in", Text: "to myself, new keys"}})
}
