package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/client/kezdtest"
)

// TestLifecycleWithCLI: with the real binaries, alice rotates her keys (her
// open tail ends with a distinct error, the old messages still read), bob
// rotates his (his earlier message to her still verifies), she deletes what
// she has read, and finally her account, after confirming.
func TestLifecycleWithCLI(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	kez := kezdtest.Binary(t, "github.com/kez-chat/kezd/cmd/kez", "kez")
	alice := &user{t: t, bin: kez, home: t.TempDir(), server: srv.URL}
	bob := &user{t: t, bin: kez, home: t.TempDir(), server: srv.URL}
	for _, u := range []struct {
		*user
		handle string
	}{{alice, "alice"}, {bob, "bob"}} {
		u.must("", "keygen", u.handle)
		u.must("", "register", u.handle)
	}
	bob.must("", "send", "--as", "bob", "alice", "before")

	tail := start(t, kez, alice.env(), "tail", "--as", "alice")
	tail.await(tail.stderr, "live")
	keyPath := filepath.Join(alice.home, ".config", "kez", "alice.json")
	oldKey := readKey(t, keyPath)
	if out := alice.must("", "rotate", "--as", "alice"); !strings.Contains(out, "rotated") {
		t.Fatalf("rotate: %s", out)
	}
	tail.await(tail.stderr, "this key was replaced")
	if err := tail.cmd.Wait(); err == nil {
		t.Fatal("tail exited 0 after its key was revoked")
	}
	checkKeyFile(t, alice.home, "alice")
	newKey := readKey(t, keyPath)
	if newKey.SigningKey == oldKey.SigningKey || len(newKey.Previous) != 1 || newKey.Previous[0].SigningKey != oldKey.SigningKey {
		t.Fatalf("key file after rotation: %+v; want new keys and the old ones kept", newKey)
	}
	if _, err := os.Stat(keyPath + ".rotating"); !os.IsNotExist(err) {
		t.Fatalf("the pending key file was left behind: %v", err)
	}

	// Sealed to her old key, read with the one kept; sealed to the new one.
	bob.must("", "send", "--as", "bob", "alice", "after")
	if out := alice.must("", "inbox", "--as", "alice"); !strings.Contains(out, "bob: before") || !strings.Contains(out, "bob: after") {
		t.Fatalf("inbox after rotating: %s", out)
	}
	// Bob rotates: his message from before still verifies, with the key he had then.
	bob.must("", "rotate", "--as", "bob")
	if out := alice.must("", "inbox", "--as", "alice"); !strings.Contains(out, "bob: before") {
		t.Fatalf("inbox after bob rotated: %s", out)
	}

	if out := alice.must("", "inbox", "--as", "alice", "--delete-through", "1"); !strings.Contains(out, "deleted 1 messages") {
		t.Fatalf("delete-through: %s", out)
	}
	// Read from the start again, the inbox and a tail say, once, what was
	// deleted before they could show it.
	gone := "message 1 was deleted from the server before you read it"
	if out, errOut, code := alice.kez("", "inbox", "--as", "alice"); code != 0 || strings.Contains(out, "before") || !strings.Contains(out, "bob: after") || strings.Count(errOut, gone) != 1 {
		t.Fatalf("inbox after deleting through 1: exit %d, stdout %q, stderr %q (want %q once)", code, out, errOut, gone)
	}
	if _, errOut, _ := alice.kez("", "inbox", "--as", "alice", "--since", "1"); strings.Contains(errOut, "deleted") {
		t.Fatalf("inbox from past the deleted message: %q", errOut)
	}
	tail = start(t, kez, alice.env(), "tail", "--as", "alice", "--since", "0")
	tail.await(tail.stderr, gone)
	tail.await(tail.stdout, "bob: after")
	tail.await(tail.stderr, "live")
	tail.interrupt()

	if _, errOut, code := alice.kez("no\n", "delete-account", "--as", "alice"); code == 0 || !strings.Contains(errOut, "not confirmed") {
		t.Fatalf("delete-account without confirmation: exit %d, %s", code, errOut)
	}
	alice.must("", "whois", "alice") // still there
	if out := alice.must("alice\n", "delete-account", "--as", "alice"); !strings.Contains(out, "deleted alice") {
		t.Fatalf("delete-account: %s", out)
	}
	if _, errOut, code := bob.kez("", "whois", "alice"); code == 0 || !strings.Contains(errOut, "no such handle") {
		t.Fatalf("whois after deletion: exit %d, %s", code, errOut)
	}
	bob.must("", "keygen", "bob2")
	bob.must("", "register", "bob2")
	if out := bob.must("", "delete-account", "--as", "bob2", "--yes", "--json"); !strings.Contains(out, `"handle":"bob2"`) {
		t.Fatalf("delete-account --yes --json: %s", out)
	}
}

func readKey(t *testing.T, path string) keyFile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var k keyFile
	if err := json.Unmarshal(data, &k); err != nil {
		t.Fatal(err)
	}
	return k
}

// TestRotateKeepsKeysWhenTheAnswerIsLost: when the rotation's answer never
// arrives (the server may have applied it), the new keys stay in the
// .rotating file beside the key file, and the error says where they are;
// removing them could lock the handle out for good.
func TestRotateKeepsKeysWhenTheAnswerIsLost(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // the request arrived; its answer is lost
		}
	}))
	t.Cleanup(srv.Close)
	home := t.TempDir()
	if _, _, err := runKez(t, home, "", "keygen", "alice"); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, ".config", "kez", "alice.json")
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = runKez(t, home, "", "rotate", "--as", "alice", "--server", srv.URL)
	if err == nil {
		t.Fatal("rotate succeeded without an answer")
	}
	pending, rerr := readKeyFile(path + ".rotating")
	if rerr != nil {
		t.Fatalf("the new keys are gone (%v); rotate said: %v", rerr, err)
	}
	if len(pending.Previous) != 1 || pending.SigningKey == "" || strings.Contains(string(before), pending.SigningKey) {
		t.Fatalf(".rotating holds %+v, want new keys with the old ones kept", pending)
	}
	if !strings.Contains(err.Error(), path+".rotating") {
		t.Fatalf("the error does not say where the new keys are: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Fatal("the key file changed without a confirmed rotation")
	}
}
