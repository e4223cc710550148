package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/internal/browsertest"
	"github.com/kez-chat/kezd/web"
)

// hangProxy is a reverse proxy in front of kezd that can go silent as a
// hung server or proxy does: while hung, it forwards nothing more of any
// response and holds every new request without an answer, keeping the
// connections open. Released, it drops what it held and forwards again.
// It keeps the headers of every stream request it sees.
type hangProxy struct {
	URL   string
	proxy *httputil.ReverseProxy

	mu      sync.Mutex
	gate    chan struct{} // while hung: closed on release
	streams []http.Header
	opened  chan struct{} // a stream request arrived
}

func newHangProxy(t *testing.T, backend string) *hangProxy {
	t.Helper()
	u, err := url.Parse(backend)
	if err != nil {
		t.Fatal(err)
	}
	p := &hangProxy{proxy: httputil.NewSingleHostReverseProxy(u), opened: make(chan struct{}, 100)}
	p.proxy.FlushInterval = -1
	p.proxy.ModifyResponse = func(res *http.Response) error {
		res.Body = &gatedBody{ReadCloser: res.Body, p: p, ctx: res.Request.Context()}
		return nil
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { p.hang(false) })
	p.URL = srv.URL
	return p
}

func (p *hangProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasSuffix(r.URL.Path, "/stream") {
		p.mu.Lock()
		p.streams = append(p.streams, r.Header.Clone())
		p.mu.Unlock()
		p.opened <- struct{}{}
	}
	if g := p.hung(); g != nil {
		select {
		case <-g:
		case <-r.Context().Done():
		}
		panic(http.ErrAbortHandler) // drop the connection, answer nothing
	}
	p.proxy.ServeHTTP(w, r)
}

// hung is the release channel while hung, else nil.
func (p *hangProxy) hung() chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gate
}

func (p *hangProxy) hang(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.gate == nil:
		p.gate = make(chan struct{})
	case !on && p.gate != nil:
		close(p.gate)
		p.gate = nil
	}
}

// streamRequests is the headers of the stream requests seen so far.
func (p *hangProxy) streamRequests() []http.Header {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]http.Header(nil), p.streams...)
}

// gatedBody forwards a response body until the proxy hangs; from then on it
// forwards nothing (what the backend sends is dropped) until the client
// goes away or the proxy is released, and then ends the response.
type gatedBody struct {
	io.ReadCloser
	p   *hangProxy
	ctx context.Context
}

func (b *gatedBody) Read(buf []byte) (int, error) {
	n, err := b.ReadCloser.Read(buf)
	if g := b.p.hung(); g != nil {
		select {
		case <-g:
		case <-b.ctx.Done():
		}
		return 0, http.ErrAbortHandler
	}
	return n, err
}

// TestReconnectsAfterSilence: the page streams through a proxy that goes
// silent, keeping the connection open, as a hung server does. With kezd
// pinging every 300 ms (and saying so in Kez-Ping-Interval), a connection
// that pings is never taken for dead; a silent one is within about 2.5
// intervals: the page says reconnecting, and why, and keeps trying, each
// attempt freshly signed and resuming from its cursor. Once the proxy
// forwards again, the message stored meanwhile appears exactly once and
// the page is live.
func TestReconnectsAfterSilence(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{Args: []string{"--sse-ping", "300ms"}})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	bob := kezdtest.Register(t, t.Context(), c, "bob")
	proxy := newHangProxy(t, srv.URL)
	alice := &person{Profile: browsertest.Start(t, "alice"), t: t, name: "alice"}
	alice.Do(chromedp.Navigate(proxy.URL + "/"))
	alice.create("alice")
	alice.openConversation("bob", "bob")
	if _, err := c.Send(t.Context(), bob, "alice", []byte("before")); err != nil {
		t.Fatal(err)
	}
	alice.messages(1)

	// Two seconds of nothing but pings (more than twice the bound): the
	// page stays live on the stream it has.
	before := len(proxy.streamRequests())
	stayed := browsertest.Eval[string](alice.Profile, `new Promise((resolve) => {
		const s = document.getElementById('status');
		const mo = new MutationObserver(() => { if (s.dataset.status !== 'live') { mo.disconnect(); resolve(s.textContent); } });
		mo.observe(s, { subtree: true, childList: true, attributes: true, characterData: true });
		setTimeout(() => { mo.disconnect(); resolve('live'); }, 2000);
	})`)
	if stayed != "live" || len(proxy.streamRequests()) != before {
		t.Fatalf("a stream that pings was left: status %q, %d stream requests (was %d)", stayed, len(proxy.streamRequests()), before)
	}

	// Only the attempts from now on count below: the page's first stream
	// left its signal in proxy.opened too.
	for len(proxy.opened) > 0 {
		<-proxy.opened
	}
	proxy.hang(true)
	hungAt := time.Now()
	alice.waitForTimeout(90*time.Second, `document.getElementById('status').dataset.status === 'reconnecting'`)
	detected := time.Since(hungAt)
	if text := alice.waitFor(`document.getElementById('status-text').textContent`); !strings.Contains(text, "The server sent nothing for 0.8 s") {
		t.Fatalf("status while silent: %s", text)
	}
	// Far sooner than the 37.5 s the page assumes without the header.
	if detected > 15*time.Second {
		t.Fatalf("silence detected after %s, want about 0.75 s", detected)
	}
	t.Logf("silence detected %s after the proxy hung", detected)

	if _, err := c.Send(t.Context(), bob, "alice", []byte("while silent")); err != nil {
		t.Fatal(err)
	}
	// The page tries again, and again: each attempt meets silence too.
	for range 2 {
		select {
		case <-proxy.opened:
		case <-time.After(60 * time.Second):
			t.Fatal("the page stopped trying to reconnect")
		}
	}
	for len(proxy.opened) > 0 {
		<-proxy.opened
	}
	proxy.hang(false)
	alice.waitStatus("live")
	if _, err := c.Send(t.Context(), bob, "alice", []byte("after")); err != nil {
		t.Fatal(err)
	}
	checkConversation(t, "alice", alice.messages(3), []shown{{Dir: "in", Text: "before"}, {Dir: "in", Text: "while silent"}, {Dir: "in", Text: "after"}})

	// Every attempt since the first was signed anew (after the page had
	// been live for two seconds), in the Authorization header, and resumed
	// after seq 1, the last message the page kept before the silence.
	reqs := proxy.streamRequests()
	if len(reqs) < before+2 {
		t.Fatalf("%d stream requests, want the first and at least two after the silence", len(reqs))
	}
	for i, h := range reqs[before:] {
		if h.Get("Last-Event-ID") != "1" {
			t.Errorf("stream request %d after the silence resumed from Last-Event-ID %q, want 1", i, h.Get("Last-Event-ID"))
		}
		_, cred, _ := strings.Cut(h.Get("Authorization"), ":")
		ts, _, _ := strings.Cut(cred, ":")
		if n, err := strconv.ParseInt(ts, 10, 64); err != nil || n < hungAt.Unix() {
			t.Errorf("stream request %d after the silence signed at %q, before the silence began (%d)", i, ts, hungAt.Unix())
		}
	}
}

// TestShowsDeletedMessages: alice's other device (the kez CLI, with the
// same key file) deleted messages 1-2 before this browser read them. Once
// the key file is imported, the stream's reset is shown in words above the
// conversations, message 3 and what follows arrive as usual, and a reload
// (which resumes after them) does not say it again.
func TestShowsDeletedMessages(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	bob := kezdtest.Register(t, t.Context(), c, "bob")
	other := newCLI(t, srv)
	other.kez("keygen", "alice")
	other.kez("register", "alice")
	for _, m := range []string{"one", "two", "three"} {
		if _, err := c.Send(t.Context(), bob, "alice", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	other.kez("inbox", "--as", "alice", "--delete-through", "2")

	alice := newPerson(t, srv, "alice")
	alice.Do(
		chromedp.WaitVisible(chromedp.ID("import-file")),
		chromedp.SetUploadFiles(chromedp.ID("import-file"), []string{other.keyPath("alice")}),
	)
	alice.waitLive()
	gap := alice.waitFor(`!document.getElementById('gap').hidden && document.getElementById('gap-text').textContent`)
	if !strings.Contains(gap, "Messages 1–2 were deleted from the server before this browser received them") {
		t.Fatalf("the page says %s", gap)
	}
	alice.openConversation("bob", "bob")
	checkConversation(t, "alice", alice.messages(1), []shown{{Dir: "in", Text: "three"}})
	if _, err := c.Send(t.Context(), bob, "alice", []byte("four")); err != nil {
		t.Fatal(err)
	}
	checkConversation(t, "alice", alice.messages(2), []shown{{Dir: "in", Text: "three"}, {Dir: "in", Text: "four"}})
	alice.Do(chromedp.Click(chromedp.ID("gap-ok")))
	alice.waitFor(`document.getElementById('gap').hidden`)

	alice.Do(chromedp.Reload())
	alice.waitLive()
	alice.openConversation("bob", "bob")
	alice.messages(2)
	if shown := browsertest.Eval[bool](alice.Profile, `!document.getElementById('gap').hidden`); shown {
		t.Fatal("after a reload the page says again that messages were deleted")
	}
}

// TestEventStreamParser runs the app's text/event-stream reader on chunks
// as a network may cut them: line ends split between chunks, lone CRs, a
// character split between its bytes, comments (pings, which count as
// bytes but are no event), and an event too long to hold.
func TestEventStreamParser(t *testing.T) {
	srv := httptest.NewServer(web.New(web.Config{}))
	t.Cleanup(srv.Close)
	b := browsertest.Start(t, "unit")
	b.Do(chromedp.Navigate(srv.URL + "/"))
	browsertest.Eval[bool](b, `(async () => {
		window.live = (await import(document.querySelector('script[type=module]').src)).live;
		return true;
	})()`)
	bytes := func(chunks ...string) [][]int {
		var out [][]int
		for _, c := range chunks {
			b := []int{}
			for _, x := range []byte(c) {
				b = append(b, int(x))
			}
			out = append(out, b)
		}
		return out
	}
	e := "é" // two bytes in UTF-8
	for _, tc := range []struct {
		name   string
		chunks [][]int
		want   string
	}{
		{"a ping, then a message", bytes(": ping\n\n", "id: 1\nevent: message\ndata: {\"seq\":1}\n\n"),
			`[{"event":"message","data":"{\"seq\":1}","id":"1"}]`},
		{"CRLF split between chunks", bytes("event: ready\r", "\ndata: {}\r\n\r", "\n"),
			`[{"event":"ready","data":"{}","id":""}]`},
		{"lone CRs, the last at the end", bytes("data: a\rdata: b\r\r"),
			`[{"event":"","data":"a\nb","id":""}]`},
		{"a character split between chunks", bytes("data:"+e[:1], e[1:]+"\n\n"),
			`[{"event":"","data":"é","id":""}]`},
		{"an event cut off by the end", bytes("data: whole\n\n", "data: cut"),
			`[{"event":"","data":"whole","id":""}]`},
		{"an event too long", bytes("data: " + strings.Repeat("x", 600<<10) + "\n\n"),
			`[{"error":"The server sent an event too long to read."}]`},
		{"many data lines too long together", bytes(strings.Repeat("data: "+strings.Repeat("x", 1000)+"\n", 600) + "\n"),
			`[{"error":"The server sent an event too long to read."}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arg, _ := json.Marshal(tc.chunks)
			got := browsertest.Eval[string](b, fmt.Sprintf(`(async () => {
				const chunks = %s;
				const stream = new ReadableStream({ start(c) { for (const ch of chunks) c.enqueue(new Uint8Array(ch)); c.close(); } });
				const out = [];
				let reads = 0;
				try {
					await live.events(stream.getReader(), () => reads++, (ev) => out.push(ev));
				} catch (err) {
					out.push({ error: err.message });
				}
				if (reads !== chunks.length) out.push({ reads });
				return JSON.stringify(out);
			})()`, arg))
			if got != tc.want {
				t.Fatalf("parsed %s\nwant   %s", got, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		header string
		want   float64
	}{
		{"", 37500}, {"15000", 37500}, {"300", 750}, {"0", 250}, {"soon", 37500}, {"-5", 37500}, {"99999999999", 37500}, {"99999999", 1500000},
	} {
		if got := browsertest.Eval[float64](b, fmt.Sprintf(`live.silenceAfter(%q || null)`, tc.header)); got != tc.want {
			t.Errorf("silence after Kez-Ping-Interval %q: %v ms, want %v", tc.header, got, tc.want)
		}
	}
}

// TestFollowsARestoredServer: a page whose cursor is ahead of anything the
// server stores for it (the server was restored from an older backup; here
// the page's cursor is set to 5 where the server stores nothing for bob)
// takes ready's id as its cursor, and shows what the server stores next,
// which it would otherwise take for messages it already kept.
func TestFollowsARestoredServer(t *testing.T) {
	srv := kezdtest.Start(t, kezdtest.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	alice := kezdtest.Register(t, t.Context(), c, "alice")
	bob := newPerson(t, srv, "bob")
	bob.create("bob")
	browserEval(t, bob, `new Promise((resolve, reject) => {
		const r = indexedDB.open('kez');
		r.onerror = () => reject(r.error);
		r.onsuccess = () => {
			const tx = r.result.transaction('meta', 'readwrite');
			tx.objectStore('meta').put(5, 'cursor');
			tx.oncomplete = () => { r.result.close(); resolve(true); };
			tx.onerror = () => reject(tx.error);
		};
	})`)
	bob.Do(chromedp.Reload())
	bob.waitLive()
	want := []shown{{Dir: "in", Text: "one"}, {Dir: "in", Text: "two"}, {Dir: "in", Text: "three"}}
	for _, m := range want {
		if _, err := c.Send(t.Context(), alice, "bob", []byte(m.Text)); err != nil {
			t.Fatal(err)
		}
	}
	bob.openConversation("alice", "alice")
	checkConversation(t, "bob", bob.messages(3), want)
	if cur := browsertest.Eval[int](bob.Profile, `new Promise((resolve) => { const r = indexedDB.open('kez'); r.onsuccess = () => { const g = r.result.transaction('meta').objectStore('meta').get('cursor'); g.onsuccess = () => { r.result.close(); resolve(g.result); }; }; })`); cur != 3 {
		t.Fatalf("the page's kept cursor is %d, want 3", cur)
	}
}
