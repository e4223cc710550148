package web_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/internal/browsertest"
)

// TestKeyChangeWarning: when a contact's registered keys change, the
// conversation warns with both fingerprints and sends nothing until the
// person accepts the new keys; then messages are sealed to the new ones.
func TestKeyChangeWarning(t *testing.T) {
	_, c, bob, alice := bobInGoAliceInBrowser(t)
	alice.openConversation("bob", "bob")
	if fp := alice.waitFor(`document.getElementById('peer-fp').textContent`); !strings.HasPrefix(fp, `"`+bob.SigningKeyHex()[:4]+" ") {
		t.Fatalf("fingerprint %s is not bob's key %s", fp, bob.SigningKeyHex())
	}
	alice.send("before the change")
	alice.messages(1)

	next, err := envelope.Generate("bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Rotate(t.Context(), bob, next); err != nil {
		t.Fatal(err)
	}
	alice.openConversation("bob", "bob")
	warning := alice.waitFor(`!document.getElementById('key-warning').hidden && document.getElementById('key-warning-text').textContent`)
	for _, key := range []string{bob.SigningKeyHex(), next.SigningKeyHex()} {
		if !strings.Contains(strings.ReplaceAll(warning, " ", ""), key) {
			t.Fatalf("warning %s does not show fingerprint %s", warning, key)
		}
	}
	alice.send("held back")
	alice.waitFor(`document.getElementById('error').textContent.includes("keys changed") && document.getElementById('compose').value === 'held back'`)
	if n := alice.waitFor(`String(document.querySelectorAll('#messages li').length)`); n != `"1"` {
		t.Fatalf("%s messages shown, want the 1 sent before the change", n)
	}

	alice.Do(chromedp.Click(chromedp.ID("accept-key")))
	alice.waitFor(`document.getElementById('key-warning').hidden`)
	alice.Do(chromedp.Click(chromedp.ID("send")))
	got := alice.messages(2)
	if got[1].Text != "held back" {
		t.Fatalf("second message %q", got[1].Text)
	}
	page, err := c.Poll(t.Context(), next, client.PollOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 {
		t.Fatalf("bob's inbox has %d messages, want 2", len(page.Messages))
	}
	opened, err := c.Open(t.Context(), next, page.Messages[1])
	if err != nil || string(opened.Plaintext) != "held back" {
		t.Fatalf("bob opens the message sent after accepting with his new keys: %v, %v", opened, err)
	}
}

// TestErrorsInWords: a handle that does not exist and an address on
// another server are explained, not silently ignored.
func TestErrorsInWords(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	alice := newPerson(t, srv, "alice")
	alice.create("alice")
	for _, tc := range []struct{ address, want string }{
		{"nobody", "There is no handle \u201cnobody\u201d on this server."},
		{"Bad Handle!", "A handle is 1 to 32 characters"},
		{"bob@elsewhere.example", "bob@elsewhere.example is not known to this server."},
	} {
		browsertest.Eval[bool](alice.Profile, fmt.Sprintf(`(document.getElementById('address').value = %q, true)`, tc.address))
		alice.Do(chromedp.Click(chromedp.ID("open-conv")))
		got := alice.waitFor(`!document.getElementById('error').hidden && document.getElementById('error').textContent`)
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: error %s, want %q", tc.address, got, tc.want)
		}
		browsertest.Eval[bool](alice.Profile, `(document.getElementById('error').hidden = true, true)`)
	}
}
