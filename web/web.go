// Package web is kez-chat's browser app, embedded in kezd: the built files in
// dist/ (made from src/ by build.mjs and committed, so serving them needs no
// Node.js) and the handler that serves them with their security and caching
// headers. The app speaks only the public protocol.
package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed dist
var dist embed.FS

// Config configures the handler.
type Config struct {
	// ConnectOrigins are origins besides the page's own that the app may
	// connect to (the server's public URL when it differs from the address
	// the page was loaded from); they join connect-src in the CSP.
	ConnectOrigins []string
}

// Content types by extension, so serving never depends on the host's
// mime.types.
var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".json": "application/json",
}

type file struct {
	body    []byte
	ctype   string
	etag    string
	caching string
	// gz is body gzipped, with its own ETag, when that is smaller.
	gz     []byte
	gzETag string
}

// Handler serves the app: "/" is index.html, revalidated on every load;
// "/assets/<name>-<hash>.<ext>" are immutable and cached for a year. Every
// response carries the page's Content-Security-Policy and the other
// security headers; a request whose If-None-Match matches gets 304.
type Handler struct {
	files   map[string]file
	headers http.Header
	// modified stands in for the embedded files' modification time, which
	// embed does not keep: Last-Modified is when the handler was made.
	modified time.Time
}

// New returns the handler for the embedded app.
func New(cfg Config) *Handler {
	h := &Handler{files: make(map[string]file), headers: securityHeaders(cfg), modified: time.Now().UTC().Truncate(time.Second)}
	err := fs.WalkDir(dist, "dist", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := dist.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		f := file{body: body, ctype: contentTypes[path.Ext(p)], etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		if f.ctype == "" {
			f.ctype = "application/octet-stream"
		}
		if gz := gzipped(body); len(gz) < len(body) {
			f.gz, f.gzETag = gz, `"`+hex.EncodeToString(sum[:16])+`-gz"`
		}
		name := strings.TrimPrefix(p, "dist")
		if strings.HasPrefix(name, "/assets/") {
			f.caching = "public, max-age=31536000, immutable"
		} else {
			f.caching = "no-cache"
		}
		h.files[name] = f
		return nil
	})
	if err != nil {
		// The files are compiled in; failing to read them is a build defect.
		panic("web: embedded app unreadable: " + err.Error())
	}
	h.files["/"] = h.files["/index.html"]
	delete(h.files, "/index.html")
	return h
}

// securityHeaders are the headers on every response of the app. The policy
// allows scripts, styles and connections only from the page's own origin
// (and the configured ones), no inline script or style attribute, no
// framing and no referrer.
func securityHeaders(cfg Config) http.Header {
	connect := append([]string{"'self'"}, cfg.ConnectOrigins...)
	csp := strings.Join([]string{
		"default-src 'none'",
		"script-src 'self'",
		"style-src 'self'",
		"img-src 'self' data:",
		"connect-src " + strings.Join(connect, " "),
		"base-uri 'none'",
		"form-action 'none'",
		"frame-ancestors 'none'",
	}, "; ")
	h := http.Header{}
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for k, v := range h.headers {
		w.Header()[k] = v
	}
	f, ok := h.files[r.URL.Path]
	if !ok {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte("not found\n"))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Cache-Control", f.caching)
	w.Header().Set("Content-Type", f.ctype)
	body, etag := f.body, f.etag
	if f.gz != nil {
		w.Header().Set("Vary", "Accept-Encoding")
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body, etag = f.gz, f.gzETag
			w.Header().Set("Content-Encoding", "gzip")
		}
	}
	w.Header().Set("ETag", etag)
	// ServeContent answers If-None-Match with 304 (the ETag is set above),
	// ranges and HEAD, and sets Last-Modified and Content-Length.
	http.ServeContent(w, r, "", h.modified, bytes.NewReader(body))
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression) // the level is valid
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// acceptsGzip reports whether an Accept-Encoding value allows gzip.
func acceptsGzip(v string) bool {
	for _, part := range strings.Split(v, ",") {
		name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
			continue
		}
		q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
