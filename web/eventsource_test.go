package web_test

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/browsertest"
)

// cutProxy is a reverse proxy in front of kezd that can cut every
// connection and refuse new ones, as a network that drops does: the browser
// sees network errors, never an HTTP status (after which EventSource would
// give up instead of retrying).
type cutProxy struct {
	URL   string
	proxy *httputil.ReverseProxy
	page  string

	mu      sync.Mutex
	cut     bool
	cancels map[*http.Request]context.CancelFunc
}

func newCutProxy(t *testing.T, backend, page string) *cutProxy {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{proxy: httputil.NewSingleHostReverseProxy(u), page: page, cancels: map[*http.Request]context.CancelFunc{}}
	p.proxy.FlushInterval = -1
	p.proxy.ErrorHandler = func(http.ResponseWriter, *http.Request, error) { panic(http.ErrAbortHandler) }
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.URL = srv.URL
	return p
}

func (p *cutProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/plain" {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(p.page))
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	p.mu.Lock()
	if p.cut {
		p.mu.Unlock()
		cancel()
		panic(http.ErrAbortHandler)
	}
	r = r.WithContext(ctx)
	p.cancels[r] = cancel
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.cancels, r)
		cut := p.cut
		p.mu.Unlock()
		cancel()
		if cut {
			panic(http.ErrAbortHandler) // end the connection, not the response
		}
	}()
	p.proxy.ServeHTTP(w, r)
}

// setCut drops every open connection and refuses new ones (true), or lets
// them through again (false).
func (p *cutProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.cancels {
			c()
		}
	}
}

// TestNativeEventSourceResumesAfterReady is PROTOCOL.md's promise that the
// `ready` event carries `id: <latest>` (issue 14), checked with the browser's
// own EventSource and its own reconnect: a stream opened with no since (so
// from "now"), whose connection is cut after ready, reconnects by itself
// with Last-Event-ID and receives the message stored while it was away,
// exactly once, even across a kezd restart.
func TestNativeEventSourceResumesAfterReady(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	ctx := t.Context()
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	bob, alice := kezdtest.Register(t, t.Context(), c, "bob"), kezdtest.Register(t, t.Context(), c, "alice")
	// One message before the stream opens: "now" is then seq 1, which the
	// browser never receives, and ready's id is what it must resume from.
	if _, err := c.Send(ctx, alice, "bob", []byte("before")); err != nil {
		t.Fatal(err)
	}

	proxy := newCutProxy(t, srv.URL, `<!doctype html><title>es</title>`)
	b := browsertest.Start(t, "eventsource")
	b.Do(chromedp.Navigate(proxy.URL + "/plain"))

	ts := time.Now().Unix()
	sig := ed25519.Sign(bob.Signing, []byte(identity.StreamString("bob", ts)))
	stream := fmt.Sprintf("/v1/inbox/bob/stream?auth=%d:%s", ts, hex.EncodeToString(sig))
	browsertest.Eval[bool](b, fmt.Sprintf(`(() => {
		window.got = { ready: [], messages: [], errors: 0, opens: 0 };
		window.waiters = [];
		const poke = () => { waiters = waiters.filter((check) => !check()); };
		const es = new EventSource(%q);
		window.es = es;
		es.onopen = () => { got.opens++; poke(); };
		es.onerror = () => { got.errors++; poke(); };
		es.addEventListener('ready', (e) => { got.ready.push(e.lastEventId); poke(); });
		es.addEventListener('message', (e) => { got.messages.push(JSON.parse(e.data).seq); poke(); });
		return true;
	})()`, stream))

	type state struct {
		Ready      []string `json:"ready"`
		Messages   []int64  `json:"messages"`
		Errors     int      `json:"errors"`
		Opens      int      `json:"opens"`
		ReadyState int      `json:"readyState"`
	}
	wait := func(what, cond string) state {
		t.Helper()
		js := fmt.Sprintf(`new Promise((resolve) => {
			const check = () => { const s = {...got, readyState: es.readyState}; if (%s) { resolve(JSON.stringify(s)); return true; } return false; };
			if (!check()) waiters.push(check);
		})`, cond)
		raw, err := browsertest.TryRun(b, 60*time.Second, chromedp.Evaluate[string](js, chromedp.EvalAwaitPromise))
		if err != nil {
			got, _ := browsertest.TryRun(b, 5*time.Second, chromedp.Evaluate[string](`JSON.stringify({...got, readyState: es.readyState})`))
			t.Fatalf("waiting for %s: %v; EventSource saw %s", what, err, got)
		}
		var s state
		if err := json.Unmarshal([]byte(raw), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	s := wait("ready", `s.ready.length === 1`)
	if s.Ready[0] != "1" || len(s.Messages) != 0 {
		t.Fatalf("first connection: ready ids %q (want [\"1\"]: ready carries id: <latest>), messages %v (want none)", s.Ready, s.Messages)
	}

	proxy.setCut(true)
	wait("the browser to see the connection drop", `s.errors >= 1`)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Send(ctx, alice, "bob", []byte("while away")); err != nil {
		t.Fatal(err)
	}
	proxy.setCut(false)

	s = wait("the message stored while away", `s.messages.length >= 1 && s.ready.length >= 2`)
	if _, err := c.Send(ctx, alice, "bob", []byte("live again")); err != nil {
		t.Fatal(err)
	}
	s = wait("the next live message", `s.messages.length >= 2`)
	if got := fmt.Sprint(s.Messages); got != "[2 3]" {
		t.Fatalf("the browser received seqs %s, want [2 3]: each message after ready exactly once", got)
	}
	if s.Opens < 2 || s.ReadyState != 1 {
		t.Fatalf("EventSource opened %d times, readyState %d: it should have reconnected by itself and be open", s.Opens, s.ReadyState)
	}
	t.Logf("EventSource: %d opens, %d errors, ready ids %v", s.Opens, s.Errors, s.Ready)
}
