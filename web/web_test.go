package web_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/web"
)

func get(t *testing.T, url string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, body
}

var assetRE = regexp.MustCompile(`/assets/app-[0-9a-f]{12}\.(js|css)`)

func TestServesTheApp(t *testing.T) {
	srv := httptest.NewServer(web.New(web.Config{ConnectOrigins: []string{"https://kez.example"}}))
	t.Cleanup(srv.Close)

	resp, page := get(t, srv.URL+"/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / = %d", resp.StatusCode)
	}
	checkSecurityHeaders(t, resp.Header)
	if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "connect-src 'self' https://kez.example;") {
		t.Fatalf("CSP %q lacks the configured origin", resp.Header.Get("Content-Security-Policy"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("Content-Type %q", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Fatalf("index Cache-Control %q, want no-cache (revalidate every load)", cc)
	}
	if bytes.Contains(page, []byte("<script>")) || regexp.MustCompile(`\son[a-z]+=`).Match(page) || bytes.Contains(page, []byte("style=")) {
		t.Fatal("index.html has inline script, an event handler attribute or an inline style, which the CSP forbids")
	}
	assets := assetRE.FindAllString(string(page), -1)
	if len(assets) != 2 {
		t.Fatalf("index.html names %v, want one script and one stylesheet", assets)
	}
	revalidates(t, srv.URL+"/", resp)

	types := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
	for _, a := range assets {
		resp, body := get(t, srv.URL+a)
		if resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Fatalf("GET %s = %d, %d bytes", a, resp.StatusCode, len(body))
		}
		checkSecurityHeaders(t, resp.Header)
		if ct := resp.Header.Get("Content-Type"); ct != types[filepath.Ext(a)] {
			t.Fatalf("%s Content-Type %q", a, ct)
		}
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Fatalf("%s Cache-Control %q, want a year, immutable", a, cc)
		}
		revalidates(t, srv.URL+a, resp)
	}

	for _, tc := range []struct {
		method, path string
		want         int
	}{
		{http.MethodGet, "/index.html", http.StatusNotFound},
		{http.MethodGet, "/assets/nope.js", http.StatusNotFound},
		{http.MethodGet, "/../web.go", http.StatusNotFound},
		{http.MethodPost, "/", http.StatusMethodNotAllowed},
		{http.MethodHead, "/", http.StatusOK},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s = %d, want %d", tc.method, tc.path, resp.StatusCode, tc.want)
		}
		checkSecurityHeaders(t, resp.Header)
	}
}

// TestGzip: a client that accepts gzip gets the files compressed, with
// their own validators, and the same bytes once decompressed.
func TestGzip(t *testing.T) {
	srv := httptest.NewServer(web.New(web.Config{}))
	t.Cleanup(srv.Close)
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr}
	fetch := func(enc, inm string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
		if enc != "" {
			req.Header.Set("Accept-Encoding", enc)
		}
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	plain, plainBody := fetch("", "")
	zipped, zippedBody := fetch("br, gzip;q=0.8", "")
	if plain.Header.Get("Content-Encoding") != "" || zipped.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding plain %q, accepting gzip %q", plain.Header.Get("Content-Encoding"), zipped.Header.Get("Content-Encoding"))
	}
	if zipped.Header.Get("Vary") != "Accept-Encoding" || zipped.Header.Get("ETag") == plain.Header.Get("ETag") {
		t.Fatalf("Vary %q, ETags %q and %q: the encodings need their own validators", zipped.Header.Get("Vary"), zipped.Header.Get("ETag"), plain.Header.Get("ETag"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(zippedBody))
	if err != nil {
		t.Fatal(err)
	}
	unzipped, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unzipped, plainBody) || len(zippedBody) >= len(plainBody) {
		t.Fatalf("gzip body: %v; %d bytes for %d", err, len(zippedBody), len(plainBody))
	}
	if r, _ := fetch("gzip", zipped.Header.Get("ETag")); r.StatusCode != http.StatusNotModified {
		t.Fatalf("revalidating the gzip body = %d", r.StatusCode)
	}
	if r, _ := fetch("gzip;q=0", ""); r.Header.Get("Content-Encoding") != "" {
		t.Fatal("gzip;q=0 got gzip")
	}
}

// revalidates checks that a reload with the validators of first gets 304.
func revalidates(t *testing.T, url string, first *http.Response) {
	t.Helper()
	etag := first.Header.Get("ETag")
	if etag == "" || first.Header.Get("Last-Modified") == "" {
		t.Fatalf("%s has no ETag or Last-Modified", url)
	}
	resp, body := get(t, url, "If-None-Match", etag)
	if resp.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Fatalf("reload of %s with If-None-Match = %d (%d bytes), want 304", url, resp.StatusCode, len(body))
	}
	resp, _ = get(t, url, "If-None-Match", `"other"`)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s with a stale ETag = %d, want 200", url, resp.StatusCode)
	}
}

func checkSecurityHeaders(t *testing.T, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, d := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, d) {
			t.Fatalf("CSP %q lacks %q", csp, d)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Fatalf("CSP %q allows inline or eval", csp)
	}
	for k, v := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"} {
		if h.Get(k) != v {
			t.Fatalf("%s = %q, want %q", k, h.Get(k), v)
		}
	}
}

// TestDistIsBuiltFromSources rebuilds the app from src/ with the pinned
// esbuild (web/node_modules, installed by scripts/test-deps.sh with npm ci)
// and fails when the committed dist/ differs: edit src/, run
// `npm run build` in web/, commit both.
func TestDistIsBuiltFromSources(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal("node is needed to check web/dist against web/src: run scripts/test-deps.sh")
	}
	if _, err := os.Stat("node_modules/esbuild/package.json"); err != nil {
		t.Fatal("web/node_modules is missing: run scripts/test-deps.sh (it runs npm ci in web/)")
	}
	out := t.TempDir()
	cmd := exec.Command(node, "build.mjs", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	want := tree(t, out)
	got := tree(t, "dist")
	for name, b := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("dist/%s is missing: rebuild web/ (npm run build) and commit dist/", name)
		} else if !bytes.Equal(g, b) {
			t.Errorf("dist/%s differs from a build of src/: rebuild web/ (npm run build) and commit dist/", name)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("dist/%s is not built from src/ any more: rebuild web/ (npm run build) and commit dist/", name)
		}
	}
}

func tree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
