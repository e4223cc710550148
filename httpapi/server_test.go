package httpapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// testStore is what the tests need from a backend.
type testStore interface {
	chat.Store
	ListMessages(ctx context.Context, to string, since int64, limit int) ([]store.Message, error)
	Ping(ctx context.Context) error
}

// backend opens a fresh, empty store for one test.
type backend struct {
	name string
	open func(t *testing.T) testStore
}

func openSQLite(t *testing.T) testStore {
	t.Helper()
	return teststore.SQLite(t)
}

func openPostgres(t *testing.T) testStore {
	t.Helper()
	return teststore.Postgres(t)
}

// backends are the stores the main API tests run against.
var backends = []backend{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

// forEachBackend runs test once per store backend.
func forEachBackend(t *testing.T, test func(t *testing.T, open func(t *testing.T) testStore)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			test(t, b.open)
		})
	}
}

// env is a running API on a real HTTP server and a real store.
type env struct {
	t   *testing.T
	st  testStore
	svc *chat.Service
	srv *Server
	hs  *httptest.Server
	url string
}

const testDomain = "kez.example"

func newEnv(t *testing.T, st testStore, configure ...func(*Config)) *env {
	t.Helper()
	return newEnvWithBroker(t, st, nil, configure...)
}

// newEnvWithBroker is newEnv with live delivery through b (nil: none).
func newEnvWithBroker(t *testing.T, st testStore, b *broker.Broker, configure ...func(*Config)) *env {
	t.Helper()
	return newEnvWithCore(t, st, b, chat.Config{}, configure...)
}

// newEnvWithCore is newEnvWithBroker with the core's settings.
func newEnvWithCore(t *testing.T, st testStore, b *broker.Broker, core chat.Config, configure ...func(*Config)) *env {
	t.Helper()
	log := testLog(t)
	core.Skew = 120 * time.Second
	svc := chat.New(core, st, nil, nil, log)
	if b != nil {
		// Safety-net store reads an hour away: what a test sees live came
		// through the broker.
		core.Recheck, core.RecheckEvery = time.Hour, time.Hour
		svc = chat.New(core, st, b, b, log)
	}
	cfg := Config{
		PublicURL: &url.URL{Scheme: "https", Host: testDomain},
		Ready:     []Check{{Name: "store", Fn: st.Ping}},
	}
	for _, f := range configure {
		f(&cfg)
	}
	srv := New(cfg, svc, log)
	hs := httptest.NewUnstartedServer(nil)
	hs.Config = srv.HTTPServer("")
	hs.Start()
	t.Cleanup(hs.Close)
	t.Cleanup(srv.CloseStreams) // before hs.Close, which waits for handlers
	return &env{t: t, st: st, svc: svc, srv: srv, hs: hs, url: hs.URL}
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// user is a client identity with its private key.
type user struct {
	handle string
	priv   ed25519.PrivateKey
	sk, ek string
}

func newUser(t testing.TB, handle string) user {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ek := make([]byte, 32)
	rand.Read(ek)
	return user{handle: handle, priv: priv, sk: hex.EncodeToString(pub), ek: hex.EncodeToString(ek)}
}

// withEK returns u with another encryption key.
func (u user) withEK(ek string) user {
	u.ek = ek
	return u
}

func now() int64 { return time.Now().Unix() }

// authHeader signs msg as u: "Kez <handle>:<ts>:<sig>".
func (u user) authHeader(msg string, ts int64) string {
	return fmt.Sprintf("Kez %s:%d:%s", u.handle, ts, identity.Sign(u.priv, msg))
}

func (u user) registerBody(ts int64) []byte {
	b, _ := json.Marshal(protocol.RegisterRequest{
		Handle: u.handle, SigningKey: u.sk, EncryptionKey: u.ek, TS: ts,
		Sig: identity.Sign(u.priv, identity.RegisterString(u.handle, u.sk, u.ek, ts)),
	})
	return b
}

// register registers u and fails the test if that does not give 201.
func (e *env) register(u user) {
	e.t.Helper()
	r := e.do(http.MethodPost, "/v1/handles", u.registerBody(now()), nil)
	r.want(e.t, http.StatusCreated)
}

// aliceAndBob registers alice and bob, the two users of most tests.
func (e *env) aliceAndBob() (alice, bob user) {
	e.t.Helper()
	alice, bob = newUser(e.t, "alice"), newUser(e.t, "bob")
	e.register(alice)
	e.register(bob)
	return alice, bob
}

// sendBody is a send request body.
func sendBody(to, id, envelope string) []byte {
	return []byte(`{"to":"` + to + `","id":"` + id + `","envelope":` + envelope + `}`)
}

// send signs body as u and posts it.
func (e *env) send(u user, body []byte) response {
	e.t.Helper()
	ts := now()
	return e.do(http.MethodPost, "/v1/messages", body, http.Header{
		"Authorization": {u.authHeader(identity.SendString(identity.BodySHA256(body), ts), ts)},
		"Content-Type":  {"application/json"},
	})
}

// mustSend sends and requires 201, returning the seq.
func (e *env) mustSend(u user, to, id, envelope string) int64 {
	e.t.Helper()
	r := e.send(u, sendBody(to, id, envelope))
	r.want(e.t, http.StatusCreated)
	var res protocol.SendResult
	r.decode(e.t, &res)
	return res.Seq
}

// poll polls u's own inbox, signed by signer.
func (e *env) poll(signer user, handle string, query string, since int64) response {
	e.t.Helper()
	ts := now()
	path := "/v1/inbox/" + handle
	if query != "" {
		path += "?" + query
	}
	return e.do(http.MethodGet, path, nil, http.Header{
		"Authorization": {signer.authHeader(identity.PollString(handle, since, ts), ts)},
	})
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (e *env) do(method, path string, body []byte, header http.Header) response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	return doRequest(e.t, req)
}

func doRequest(t *testing.T, req *http.Request) response {
	t.Helper()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", req.Method, req.URL.Path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func (r response) want(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}

// wantError checks a PROTOCOL error response.
func (r response) wantError(t *testing.T, status int, code protocol.Code) {
	t.Helper()
	r.want(t, status)
	var e struct {
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	if e.Error != string(code) || e.Message == "" {
		t.Fatalf("error body %s, want code %q and a message", r.body, code)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// messageCount is how many messages handle has in the store.
func (e *env) messageCount(handle string) int {
	e.t.Helper()
	ms, err := e.st.ListMessages(e.t.Context(), handle, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ms)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
