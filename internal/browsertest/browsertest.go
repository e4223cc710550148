// Package browsertest starts the real Debian Chromium, headless, for tests
// that drive a browser with chromedp. Each Profile is a browser process of its
// own with a fresh user-data directory, so two profiles are two people: they
// share no cookies, storage or IndexedDB. A missing browser fails the test
// with the command that installs it; it never skips.
package browsertest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// DefaultPath is where Debian's chromium package puts the browser.
const DefaultPath = "/usr/bin/chromium"

// DefaultTimeout bounds each Run of a Profile.
const DefaultTimeout = 30 * time.Second

// ErrNoBrowser reports that no Chromium binary was found.
var ErrNoBrowser = errors.New("chromium not found: run scripts/test-deps.sh (it runs apt-get install chromium), or apt-get install -y chromium")

// ExecPath returns the Chromium binary: DefaultPath, else chromium or
// chromium-browser on $PATH.
func ExecPath() (string, error) {
	if fi, err := os.Stat(DefaultPath); err == nil && !fi.IsDir() {
		return DefaultPath, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", ErrNoBrowser
}

// Flags returns the command-line flags a Profile starts Chromium with, for
// the user-data directory dir. Beyond chromedp's quiet defaults, everything
// that would reach the network on its own (component updates, sync, field
// trials, QUIC) is off, and the sandbox is off only when running as root,
// where Chromium refuses to start with it.
func Flags(dir string) []chromedp.ExecAllocatorOption {
	opts := append([]chromedp.ExecAllocatorOption{}, chromedp.DefaultExecAllocatorOptions[:]...)
	opts = append(opts,
		chromedp.Flag("headless", true),
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-domain-reliability", true),
		chromedp.Flag("no-pings", true),
		chromedp.UserDataDir(dir),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox)
	}
	return opts
}

// Profile is one headless Chromium with its own user-data directory and one
// open tab. Ctx is the tab's chromedp context; the browser ends when the test
// does.
type Profile struct {
	// Ctx is the tab's context, for chromedp.Do and chromedp.Run. It has no
	// deadline; Do and Eval add one per call.
	Ctx context.Context
	// Dir is the profile's user-data directory.
	Dir string

	t    testing.TB
	name string
	wg   sync.WaitGroup
}

// Start launches Chromium with a fresh profile named name (used in logs).
// The page's console output and uncaught exceptions are logged to t.
func Start(t testing.TB, name string) *Profile {
	t.Helper()
	path, err := ExecPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := append(Flags(dir), chromedp.ExecPath(path))
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	p := &Profile{Ctx: ctx, Dir: dir, t: t, name: name}
	t.Cleanup(func() {
		cancel()
		acancel()
		p.wg.Wait()
	})
	// The first call starts the browser (and must not have a deadline, which
	// would end the browser with it); a browser that cannot start fails here,
	// with its reason.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("browsertest: start %s (%s): %v", name, path, err)
	}
	p.logConsole()
	return p
}

// NewTab opens another tab in the same browser and profile (so sharing its
// storage), as a person with two tabs open has.
func (p *Profile) NewTab(name string) *Profile {
	p.t.Helper()
	ctx, cancel := chromedp.NewContext(p.Ctx)
	tab := &Profile{Ctx: ctx, Dir: p.Dir, t: p.t, name: name}
	p.t.Cleanup(func() {
		cancel()
		tab.wg.Wait()
	})
	if err := chromedp.Do(ctx); err != nil {
		p.t.Fatalf("browsertest: open tab %s: %v", name, err)
	}
	tab.logConsole()
	return tab
}

// logConsole logs the tab's console output and uncaught exceptions to t.
func (p *Profile) logConsole() {
	t, name, ctx := p.t, p.name, p.Ctx
	console := chromedp.Console(ctx)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for m, err := range console {
			if err != nil {
				return
			}
			t.Logf("browser %s: %s", name, m)
		}
	}()
}

// Do runs actions in the profile's tab within DefaultTimeout and fails the
// test on error.
func (p *Profile) Do(actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	if err := p.Try(DefaultTimeout, actions...); err != nil {
		p.t.Fatalf("browser %s: %v", p.name, err)
	}
}

// Try runs actions within d and returns their error, for tests that expect
// one or need another time limit.
func (p *Profile) Try(d time.Duration, actions ...chromedp.Action[chromedp.Void]) error {
	ctx, cancel := context.WithTimeout(p.Ctx, d)
	defer cancel()
	return chromedp.Do(ctx, actions...)
}

// Run runs one action that returns a value within DefaultTimeout and fails the
// test on error.
func Run[T any](p *Profile, a chromedp.Action[T]) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.Ctx, DefaultTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		p.t.Fatalf("browser %s: %v", p.name, err)
	}
	return v
}

// TryRun runs one action that returns a value within d and returns its
// error rather than failing the test.
func TryRun[T any](p *Profile, d time.Duration, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(p.Ctx, d)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// Eval evaluates a JavaScript expression in the page, awaiting it when it is
// a promise, and returns its JSON value decoded as T. It fails the test on an
// exception.
func Eval[T any](p *Profile, expr string) T {
	p.t.Helper()
	return Run(p, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
}

// Enter presses Enter in the focused element as a keyboard does: a keydown
// that carries the key's text, then a keyup. A page that prevents the
// keydown's default (a composer where Enter sends) then gets no newline.
// chromedp's kb package sends the text as a separate char event instead,
// which no page handler can prevent.
func Enter() chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		down := input.DispatchKeyEventParams{
			Type:                  input.DispatchKeyEventTypeKeyDown,
			Key:                   "Enter",
			Code:                  "Enter",
			Text:                  "\r",
			UnmodifiedText:        "\r",
			WindowsVirtualKeyCode: 13,
			NativeVirtualKeyCode:  13,
		}
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, down); err != nil {
			return err
		}
		up := down
		up.Type = input.DispatchKeyEventTypeKeyUp
		up.Text, up.UnmodifiedText = "", ""
		_, err := cdp.Call(ctx, t, input.DispatchKeyEvent, up)
		return err
	})
}

// Download runs trigger (a click on a download link, say), waits for the
// download it starts to complete and returns the saved file's path, in a
// directory of the test's.
func (p *Profile) Download(trigger chromedp.Action[chromedp.Void]) string {
	p.t.Helper()
	dir := p.t.TempDir()
	ctx, cancel := context.WithTimeout(p.Ctx, DefaultTimeout)
	defer cancel()
	events := chromedp.BrowserEvents(ctx, browser.DownloadProgress)
	if _, err := chromedp.CallBrowser(ctx, browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{
		Behavior:      browser.SetDownloadBehaviorBehaviorAllow,
		DownloadPath:  dir,
		EventsEnabled: &[]bool{true}[0],
	}); err != nil {
		p.t.Fatalf("browser %s: allow downloads: %v", p.name, err)
	}
	if err := chromedp.Do(ctx, trigger); err != nil {
		p.t.Fatalf("browser %s: %v", p.name, err)
	}
	for ev, err := range events {
		if err != nil {
			p.t.Fatalf("browser %s: waiting for a download: %v", p.name, err)
		}
		switch ev.State {
		case browser.DownloadProgressStateCompleted:
			if ev.FilePath == "" {
				p.t.Fatalf("browser %s: download completed without a path", p.name)
			}
			return ev.FilePath
		case browser.DownloadProgressStateCanceled:
			p.t.Fatalf("browser %s: download canceled", p.name)
		}
	}
	p.t.Fatalf("browser %s: no download", p.name)
	return ""
}
