package web_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/client/kezdtest"
)

// cli is one person at a terminal with the kez CLI: their own HOME.
type cli struct {
	t      *testing.T
	bin    string
	home   string
	server string
}

func newCLI(t *testing.T, srv *kezdtest.Server) *cli {
	t.Helper()
	return &cli{t: t, bin: kezdtest.Binary(t, "github.com/kez-chat/kezd/cmd/kez", "kez"), home: t.TempDir(), server: srv.URL}
}

func (u *cli) kez(args ...string) string {
	u.t.Helper()
	cmd := exec.CommandContext(u.t.Context(), u.bin, args...)
	cmd.Env = []string{"HOME=" + u.home, "PATH=" + os.Getenv("PATH"), "KEZ_SERVER=" + u.server}
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		u.t.Fatalf("kez %v: %v\n%s", args, err, errOut.String())
	}
	return out.String()
}

func (u *cli) keyPath(handle string) string {
	return filepath.Join(u.home, ".config", "kez", handle+".json")
}

// TestInteropWithCLI: the browser and the kez CLI read each other's
// messages, a key file exported from the browser works in the CLI, and one
// made by `kez keygen` imports into the browser.
func TestInteropWithCLI(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	carol := newCLI(t, srv)
	carol.kez("keygen", "carol")
	carol.kez("register", "carol")

	alice := newPerson(t, srv, "alice")
	alice.create("alice")

	// CLI to browser.
	carol.kez("send", "--as", "carol", "alice", "from the cli <b>bold</b>")
	alice.openConversation("carol", "carol")
	checkConversation(t, "alice", alice.messages(1), []shown{{Dir: "in", Text: "from the cli <b>bold</b>"}})

	// Browser to CLI.
	alice.send("from the browser & co")
	alice.messages(2)
	if out := carol.kez("inbox", "--as", "carol"); !strings.Contains(out, "from the browser & co") {
		t.Fatalf("kez inbox --as carol:\n%s", out)
	}

	// The browser's key file works in the CLI: it reads alice's inbox and
	// sends as alice.
	path := alice.Download(chromedp.Click(chromedp.ID("export")))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	asAlice := newCLI(t, srv)
	if err := os.MkdirAll(filepath.Dir(asAlice.keyPath("alice")), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(asAlice.keyPath("alice"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out := asAlice.kez("inbox", "--as", "alice"); !strings.Contains(out, "from the cli <b>bold</b>") {
		t.Fatalf("kez inbox --as alice with the browser's key file:\n%s", out)
	}
	asAlice.kez("send", "--as", "alice", "carol", "alice, from the cli")
	if out := carol.kez("inbox", "--as", "carol"); !strings.Contains(out, "alice, from the cli") {
		t.Fatalf("kez inbox --as carol:\n%s", out)
	}

	// A key file from `kez keygen` imports into a browser, which then reads
	// the inbox it already had and sends as that handle.
	dave := newCLI(t, srv)
	dave.kez("keygen", "dave")
	dave.kez("register", "dave")
	carol.kez("send", "--as", "carol", "dave", "hello dave")
	browser := newPerson(t, srv, "dave")
	browser.Do(
		chromedp.WaitVisible(chromedp.ID("import-file")),
		chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{dave.keyPath("dave")}),
	)
	browser.waitLive()
	browser.openConversation("carol", "carol")
	checkConversation(t, "dave", browser.messages(1), []shown{{Dir: "in", Text: "hello dave"}})
	browser.send("dave, from the browser")
	browser.messages(2)
	if out := carol.kez("inbox", "--as", "carol"); !strings.Contains(out, "dave, from the browser") {
		t.Fatalf("kez inbox --as carol:\n%s", out)
	}
}
