package web_test

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/internal/browsertest"
	"github.com/kez-chat/kezd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var screenshots = flag.String("screenshots", "", "also save the conversation screenshots in this directory (go test ./web -run TestTwoPeopleChat -args -screenshots=$PWD/docs)")

// screenshot saves a PNG of p's window as name, in the test's directory
// (logged) and in -screenshots when given.
func (p *person) screenshot(name string) {
	p.t.Helper()
	png := browsertest.Run(p.Profile, chromedp.CaptureScreenshot())
	dirs := []string{p.t.TempDir()}
	if *screenshots != "" {
		dirs = append(dirs, *screenshots)
	}
	for _, d := range dirs {
		path := filepath.Join(d, name)
		if err := os.WriteFile(path, png, 0o644); err != nil {
			p.t.Fatal(err)
		}
		p.t.Logf("screenshot: %s", path)
	}
}

// stores runs f against a kezd on SQLite and on Postgres.
func stores(t *testing.T, f func(t *testing.T, srv *kezdtest.Server)) {
	t.Run("sqlite", func(t *testing.T) {
		f(t, kezdtest.Start(t, kezdtest.Config{}))
	})
	t.Run("postgres", func(t *testing.T) {
		f(t, kezdtest.Start(t, kezdtest.Config{DatabaseURL: pgtest.NewDatabase(t)}))
	})
}

// person is someone using the app in a browser profile of their own.
type person struct {
	*browsertest.Profile
	t    *testing.T
	name string
}

func newPerson(t *testing.T, srv *kezdtest.Server, name string) *person {
	t.Helper()
	p := &person{Profile: browsertest.Start(t, name), t: t, name: name}
	p.Do(chromedp.Navigate(srv.URL + "/"))
	return p
}

// waitFor waits, event-driven, until the JavaScript expression cond is truthy
// in the page (re-checked on every DOM change) and returns its value as JSON.
func (p *person) waitFor(cond string) string {
	p.t.Helper()
	return p.waitForTimeout(browsertest.DefaultTimeout, cond)
}

func (p *person) waitForTimeout(d time.Duration, cond string) string {
	p.t.Helper()
	js := fmt.Sprintf(`new Promise((resolve) => {
		const check = () => { try { const v = (%s); if (v) { resolve(JSON.stringify(v)); return true; } } catch (e) {} return false; };
		if (check()) return;
		const mo = new MutationObserver(() => { if (check()) mo.disconnect(); });
		mo.observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
	})`, cond)
	out, err := browsertest.TryRun(p.Profile, d, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s: waiting for %s: %v\npage: %s", p.name, cond, err, p.pageText())
	}
	return out
}

func (p *person) pageText() string {
	v, err := chromedp.Run(p.Ctx, chromedp.Evaluate[string](`document.body.innerText`))
	if err != nil {
		return err.Error()
	}
	return v
}

// create makes an identity with handle and waits for the app to be live.
func (p *person) create(handle string) {
	p.t.Helper()
	p.Do(
		chromedp.WaitVisible(chromedp.ID("handle-input")),
		chromedp.SendKeys(chromedp.ID("handle-input"), handle),
		chromedp.Click(chromedp.ID("create")),
	)
	p.waitLive()
}

func (p *person) waitLive() {
	p.t.Helper()
	p.waitFor(`document.getElementById('status').dataset.status === 'live'`)
}

// openConversation starts (or opens) a conversation with address.
func (p *person) openConversation(address, handle string) {
	p.t.Helper()
	p.Do(
		chromedp.WaitVisible(chromedp.ID("address")),
		chromedp.SendKeys(chromedp.ID("address"), address),
		browsertest.Enter(),
	)
	p.waitFor(fmt.Sprintf(`!document.getElementById('conv-body').hidden && document.getElementById('peer-title').textContent === %q && document.activeElement.id === 'compose'`, handle))
}

// send types text into the composer and presses Enter.
func (p *person) send(text string) {
	p.t.Helper()
	p.Do(chromedp.SendKeys(chromedp.ID("compose"), text), browsertest.Enter())
}

type shown struct {
	Dir    string `json:"dir"`
	Text   string `json:"text"`
	Status string `json:"status"`
	ID     string `json:"id"`
}

const listMessages = `[...document.querySelectorAll('#messages li')].map(li => ({dir: li.dataset.dir, text: li.querySelector('.text').textContent, status: li.dataset.status || '', id: li.dataset.id}))`

// messages waits until the open conversation shows n messages, every sent
// one delivered, and returns them.
func (p *person) messages(n int) []shown {
	p.t.Helper()
	raw := p.waitFor(fmt.Sprintf(`(() => { const m = %s; return m.length >= %d && m.every(x => x.dir === 'in' || x.status === 'sent') && m; })()`, listMessages, n))
	var out []shown
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		p.t.Fatal(err)
	}
	if len(out) != n {
		p.t.Fatalf("%s shows %d messages, want %d: %+v", p.name, len(out), n, out)
	}
	return out
}

func checkConversation(t *testing.T, who string, got []shown, want []shown) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d messages, want %d:\n%+v", who, len(got), len(want), got)
	}
	for i := range want {
		if got[i].Dir != want[i].Dir || got[i].Text != want[i].Text {
			t.Fatalf("%s: message %d = %s %q, want %s %q\nall: %+v", who, i, got[i].Dir, got[i].Text, want[i].Dir, want[i].Text, got)
		}
	}
}

func TestTwoPeopleChat(t *testing.T) {
	stores(t, func(t *testing.T, srv *kezdtest.Server) {
		alice := newPerson(t, srv, "alice")
		bob := newPerson(t, srv, "bob")
		alice.Do(chromedp.EmulateViewport(1000, 620))
		bob.Do(chromedp.EmulateViewport(390, 760, chromedp.EmulateMobile))
		alice.create("alice")
		bob.create("bob")

		alice.openConversation("bob", "bob")
		alice.send("hi bob")
		bob.openConversation("alice", "alice")
		checkConversation(t, "bob", bob.messages(1), []shown{{Dir: "in", Text: "hi bob"}})
		bob.send("hello alice")
		checkConversation(t, "alice", alice.messages(2), []shown{{Dir: "out", Text: "hi bob"}, {Dir: "in", Text: "hello alice"}})
		alice.send("how are you?")
		checkConversation(t, "alice", alice.messages(3), []shown{
			{Dir: "out", Text: "hi bob"}, {Dir: "in", Text: "hello alice"}, {Dir: "out", Text: "how are you?"},
		})
		checkConversation(t, "bob", bob.messages(3), []shown{
			{Dir: "in", Text: "hi bob"}, {Dir: "out", Text: "hello alice"}, {Dir: "in", Text: "how are you?"},
		})
		if !strings.Contains(alice.pageText(), "live") {
			t.Fatalf("alice's status is not live: %s", alice.pageText())
		}
		// On a phone-sized window the conversation fills the width, nothing
		// overflows sideways, and the composer is in view.
		layout := `(() => {
			const c = document.getElementById('compose').getBoundingClientRect();
			return { overflow: document.documentElement.scrollWidth > innerWidth, composer: c.bottom <= innerHeight && c.width > 200, side: getComputedStyle(document.querySelector('.side')).display,
				detail: 'composer ' + JSON.stringify(c) + ' in ' + innerWidth + 'x' + innerHeight };
		})()`
		fits := browsertest.Eval[map[string]any](bob.Profile, layout)
		if fits["overflow"] != false || fits["composer"] != true || fits["side"] != "none" {
			bob.screenshot("phone-layout-failed.png")
			t.Fatalf("phone layout: %v", fits)
		}
		alice.screenshot("web-conversation-" + t.Name()[len("TestTwoPeopleChat/"):] + ".png")
		bob.screenshot("web-conversation-phone-" + t.Name()[len("TestTwoPeopleChat/"):] + ".png")
	})
}

// bobInGoAliceInBrowser is the usual start of a browser test: a kezd on
// SQLite, a Go client of it with bob registered, and alice created in a
// browser profile of her own.
func bobInGoAliceInBrowser(t *testing.T) (*kezdtest.Server, *client.Client, *envelope.Identity, *person) {
	t.Helper()
	srv := kezdtest.Start(t, kezdtest.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	bob := kezdtest.Register(t, t.Context(), c, "bob")
	alice := newPerson(t, srv, "alice")
	alice.create("alice")
	return srv, c, bob, alice
}
