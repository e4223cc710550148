package httpapi

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store/pgtest"
	"github.com/kez-chat/kezd/store/postgres"
)

// withLimits configures the server's per-IP rate limits.
func withLimits(limits map[ratelimit.Name]ratelimit.Limit) func(*Config) {
	return func(c *Config) { c.Limits = ratelimit.New(ratelimit.Config{Limits: limits}) }
}

// wantRetryAfter checks a 429 rate_limited with a Retry-After in whole seconds.
func (r response) wantRateLimited(t *testing.T) {
	t.Helper()
	r.wantError(t, http.StatusTooManyRequests, protocol.CodeRateLimited)
	n, err := strconv.Atoi(r.header.Get("Retry-After"))
	if err != nil || n < 1 {
		t.Fatalf("Retry-After %q, want a positive number of seconds", r.header.Get("Retry-After"))
	}
}

// from returns a client whose connections come from the loopback address
// ip (any 127.x.y.z is this machine's), as a second client machine would.
func from(t *testing.T, ip string) *http.Client {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	tr := &http.Transport{DialContext: d.DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// doAs is e.do on client c.
func (e *env) doAs(c *http.Client, method, path string, body io.Reader, header http.Header) response {
	e.t.Helper()
	req, err := http.NewRequestWithContext(e.t.Context(), method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

func TestRegistrationsPerIP(t *testing.T) {
	e := newEnv(t, openSQLite(t), withLimits(map[ratelimit.Name]ratelimit.Limit{
		ratelimit.Registrations: {Burst: 3, Per: time.Hour},
	}))
	for i := range 3 {
		e.register(newUser(t, "u"+itoa(int64(i))))
	}
	u := newUser(t, "u3")
	e.do(http.MethodPost, "/v1/handles", u.registerBody(now()), nil).wantRateLimited(t)
	// A forwarded address from a peer that is not a trusted proxy is ignored.
	e.do(http.MethodPost, "/v1/handles", u.registerBody(now()), http.Header{"X-Forwarded-For": {"192.0.2.1"}}).wantRateLimited(t)
	// Another client has its own budget.
	e.doAs(from(t, "127.0.0.2"), http.MethodPost, "/v1/handles", bytesReader(u.registerBody(now())), nil).want(t, http.StatusCreated)
	if n := e.srv.limits.(*ratelimit.Limiter).Refusals(ratelimit.Registrations); n != 2 {
		t.Fatalf("refusals counted %d, want 2", n)
	}
}

// Behind a trusted proxy the client IP is the forwarded one, and a client
// cannot prepend addresses of its own to get a fresh budget.
func TestTrustedProxyForwardedFor(t *testing.T) {
	e := newEnv(t, openSQLite(t), withLimits(map[ratelimit.Name]ratelimit.Limit{
		ratelimit.Registrations: {Burst: 1, Per: time.Hour},
	}), func(c *Config) { c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} })
	reg := func(handle, xff string) response {
		return e.do(http.MethodPost, "/v1/handles", newUser(t, handle).registerBody(now()), http.Header{"X-Forwarded-For": {xff}})
	}
	reg("a1", "192.0.2.1").want(t, http.StatusCreated)
	reg("a2", "192.0.2.2").want(t, http.StatusCreated)
	reg("a3", "192.0.2.1").wantRateLimited(t)
	// The proxy appends the peer it saw; what the client wrote before it is not trusted.
	reg("a4", "198.51.100.9, 192.0.2.1").wantRateLimited(t)
}

func TestFailedAuthPerIP(t *testing.T) {
	e := newEnv(t, openSQLite(t), withLimits(map[ratelimit.Name]ratelimit.Limit{
		ratelimit.FailedAuth: {Burst: 3, Per: time.Hour},
	}))
	bob, mallory := newUser(t, "bob"), newUser(t, "mallory")
	e.register(bob)
	ts := now()
	forged := http.Header{"Authorization": {mallory.authHeader(identity.PollString("bob", 0, ts), ts)}}
	forged.Set("Authorization", "Kez bob"+forged.Get("Authorization")[len("Kez mallory"):])
	for range 3 {
		e.do(http.MethodGet, "/v1/inbox/bob", nil, forged).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	}
	e.do(http.MethodGet, "/v1/inbox/bob", nil, forged).wantRateLimited(t)
	// Past the limit the IP is refused before its signature is looked at,
	// even a good one; another IP is not.
	e.poll(bob, "bob", "", 0).wantRateLimited(t)
	ts = now()
	e.doAs(from(t, "127.0.0.2"), http.MethodGet, "/v1/inbox/bob", nil, http.Header{
		"Authorization": {bob.authHeader(identity.PollString("bob", 0, ts), ts)},
	}).want(t, http.StatusOK)
	// Successes cost nothing.
	for range 5 {
		ts = now()
		e.doAs(from(t, "127.0.0.3"), http.MethodGet, "/v1/inbox/bob", nil, http.Header{
			"Authorization": {bob.authHeader(identity.PollString("bob", 0, ts), ts)},
		}).want(t, http.StatusOK)
	}
}

// Rotation, whose signature is in the body, and the two deletions share the
// failed-authentication limit of every signed request: each bad signature,
// stale timestamp or unknown signer is charged to the client's IP, and an
// IP past the limit, whichever requests used it up, is refused before its
// signature is checked.
func TestFailedAuthPerIPSignedChanges(t *testing.T) {
	type request struct {
		method, path string
		body         []byte
		header       http.Header
	}
	signed := func(method, path string, signer user, msg string, ts int64) request {
		return request{method, path, nil, http.Header{"Authorization": {signer.authHeader(msg, ts)}}}
	}
	next := newUser(t, "alice")
	for _, c := range []struct {
		name string
		req  func(signer user, ts int64) request
	}{
		{"rotate", func(signer user, ts int64) request {
			return request{http.MethodPost, "/v1/handles/" + signer.handle + "/keys", rotateBody(signer, next, ts), nil}
		}},
		{"delete handle", func(signer user, ts int64) request {
			return signed(http.MethodDelete, "/v1/handles/"+signer.handle, signer, identity.DeleteHandleString(signer.handle, ts), ts)
		}},
		{"delete through", func(signer user, ts int64) request {
			return signed(http.MethodDelete, "/v1/inbox/"+signer.handle+"?through=1", signer, identity.DeleteThroughString(signer.handle, 1, ts), ts)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, openSQLite(t), withLimits(map[ratelimit.Name]ratelimit.Limit{
				ratelimit.FailedAuth: {Burst: 3, Per: time.Hour},
			}))
			alice := newUser(t, "alice")
			e.register(alice)
			forged := newUser(t, "mallory")
			forged.handle = "alice"
			do := func(client *http.Client, r request) response {
				t.Helper()
				return e.doAs(client, r.method, r.path, bytesReader(r.body), r.header)
			}

			first := from(t, "127.0.0.1")
			do(first, c.req(forged, now())).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
			do(first, c.req(alice, now()-3600)).wantError(t, http.StatusUnauthorized, protocol.CodeStaleTimestamp)
			do(first, c.req(newUser(t, "nobody"), now())).wantError(t, http.StatusUnauthorized, protocol.CodeUnauthorized)
			do(first, c.req(forged, now())).wantRateLimited(t)
			do(first, c.req(alice, now())).wantRateLimited(t)

			// An IP blocked by bad polls is refused here too.
			second := from(t, "127.0.0.2")
			ts := now()
			badPoll := signed(http.MethodGet, "/v1/inbox/alice", forged, identity.PollString("alice", 0, ts), ts)
			for range 3 {
				do(second, badPoll).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
			}
			do(second, c.req(forged, now())).wantRateLimited(t)
			do(second, c.req(alice, now())).wantRateLimited(t)

			do(from(t, "127.0.0.3"), c.req(alice, now())).want(t, http.StatusOK)
		})
	}
}

// Sends are limited in the core, per sender and per (sender, recipient),
// by count and by envelope bytes; a refused send stores nothing.
func TestSendLimits(t *testing.T) {
	envelope := `{"ct":"0123456789012345678901234567890123456789"}` // 49 bytes
	for _, c := range []struct {
		name  string
		limit ratelimit.Name
		burst float64
		// sends is how many pass, all to bob.
		sends int
	}{
		{"per sender", ratelimit.Sends, 4, 4},
		{"messages per pair", ratelimit.PairMessages, 3, 3},
		{"bytes per pair", ratelimit.PairBytes, 5 * 49, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := openSQLite(t)
			e := newEnv(t, st)
			lim := ratelimit.New(ratelimit.Config{Limits: map[ratelimit.Name]ratelimit.Limit{c.limit: {Burst: c.burst, Per: time.Hour}}})
			e.svc = chat.New(chat.Config{Limits: lim}, st, nil, nil, testLog(t))
			e.srv.svc = e.svc
			alice, bob, carol := newUser(t, "alice"), newUser(t, "bob"), newUser(t, "carol")
			e.register(alice)
			e.register(bob)
			e.register(carol)
			for i := range c.sends {
				e.mustSend(alice, "bob", "m"+itoa(int64(i)), envelope)
			}
			e.send(alice, sendBody("bob", "over", envelope)).wantRateLimited(t)
			if n := e.messageCount("bob"); n != c.sends {
				t.Fatalf("bob has %d messages, want %d: the refused send was stored", n, c.sends)
			}
			// A retry of a stored message is still its duplicate.
			r := e.send(alice, sendBody("bob", "m0", envelope))
			r.want(t, http.StatusOK)
			var dup protocol.SendResult
			if r.decode(t, &dup); !dup.Duplicate || dup.Seq != 1 || dup.To != "bob" || dup.ID != "m0" {
				t.Fatalf("retry of m0 over the limit answered %s, want the duplicate of seq 1", r.body)
			}
			// Another sender to the same recipient has its own budget.
			e.mustSend(carol, "bob", "c1", envelope)
			if lim.Refusals(c.limit) != 2 {
				t.Fatalf("refusals %d, want 2 (over, and the retry of m0)", lim.Refusals(c.limit))
			}
		})
	}
}

// openPolls is how many long-polls s counts for handle.
func (s *Server) openPolls(handle string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls.byHandle[handle]
}

// waitPolls waits until s counts n long-polls for handle.
func waitPolls(t *testing.T, s *Server, handle string, n int) {
	t.Helper()
	testwait.Until(t, fmt.Sprintf("%d long-polls of %s to wait", n, handle), func() bool { return s.openPolls(handle) >= n })
}

// Long-polls are capped like streams: per handle and per client IP
// (defect: one handle held 400 waiting long-polls).
func TestLongPollCaps(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.MaxPollsPerHandle = 2; c.MaxPollsPerIP = 3 })
	users := []user{newUser(t, "a1"), newUser(t, "a2"), newUser(t, "b1")}
	for _, u := range users {
		e.register(u)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	hold := func(u user) {
		ts := now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/inbox/"+u.handle+"?wait=30", nil)
		req.Header.Set("Authorization", u.authHeader(identity.PollString(u.handle, 0, ts), ts))
		wg.Go(func() {
			if res, err := http.DefaultClient.Do(req); err == nil {
				res.Body.Close()
			}
		})
	}
	hold(users[0])
	hold(users[0])
	waitPolls(t, e.srv, "a1", 2)
	e.poll(users[0], "a1", "wait=30", 0).wantRateLimited(t)
	if n := e.srv.CapRefusals("long_polls_per_handle"); n != 1 {
		t.Fatalf("long_polls_per_handle refusals = %d, want 1", n)
	}
	// A plain poll does not wait and is not counted.
	e.poll(users[0], "a1", "", 0).want(t, http.StatusOK)

	hold(users[1])
	waitPolls(t, e.srv, "a2", 1)
	e.poll(users[1], "a2", "wait=30", 0).wantRateLimited(t) // the IP's third is its cap
	// Another client is not held up by this one's.
	ts := now()
	r := e.doAs(from(t, "127.0.0.2"), http.MethodGet, "/v1/inbox/b1?wait=1", nil, http.Header{
		"Authorization": {users[2].authHeader(identity.PollString("b1", 0, ts), ts)},
	})
	r.want(t, http.StatusOK)
}

// One client holding many handles' streams cannot take every stream slot of
// an instance (defect: with --max-streams 64, 8 handles × 8 streams made
// another user's stream get 429).
func TestStreamCapPerIP(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.MaxStreams = 6; c.MaxStreamsPerHandle = 8; c.MaxStreamsPerIP = 4 })
	var hogs []user
	for i := range 3 {
		u := newUser(t, "hog"+itoa(int64(i)))
		e.register(u)
		hogs = append(hogs, u)
	}
	opened := 0
	for _, u := range hogs {
		for range 2 {
			path := streamPath(u, u.handle, "")
			if opened < 4 {
				e.openStream(path, nil).wantReady(0)
				opened++
				continue
			}
			e.do(http.MethodGet, path, nil, nil).wantRateLimited(t)
		}
	}
	if n := e.srv.CapRefusals("streams_per_ip"); n != 2 {
		t.Fatalf("streams_per_ip refusals = %d, want 2", n)
	}
	victim := newUser(t, "victim")
	e.register(victim)
	ctx, cancel := context.WithTimeout(t.Context(), streamTimeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+streamPath(victim, "victim", ""), nil)
	res, err := from(t, "127.0.0.2").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("another client's stream: %s, want 200", res.Status)
	}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

// A failed authentication that the shared rate-limit store cannot be
// charged for (Postgres gone) is still answered for what it is, 401, not
// 503 for the store.
func TestFailedAuthChargeWithoutTheStore(t *testing.T) {
	t.Parallel()
	shared, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.NewDatabase(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lim := ratelimit.New(ratelimit.Config{Limits: map[ratelimit.Name]ratelimit.Limit{ratelimit.FailedAuth: {Burst: 8, Per: time.Hour}}, Shared: shared})
	e := newEnv(t, openSQLite(t), func(c *Config) { c.Limits = lim })
	bob, mallory := newUser(t, "bob"), newUser(t, "mallory")
	e.register(bob)
	forged := func() http.Header {
		ts := now()
		h := http.Header{"Authorization": {mallory.authHeader(identity.PollString("bob", 0, ts), ts)}}
		h.Set("Authorization", "Kez bob"+h.Get("Authorization")[len("Kez mallory"):])
		return h
	}
	e.do(http.MethodGet, "/v1/inbox/bob", nil, forged()).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	if err := shared.Close(); err != nil {
		t.Fatal(err)
	}
	// The first lease (8 on trust, less the one reported) runs out, and
	// each failure past it asks the closed store.
	for range 10 {
		e.do(http.MethodGet, "/v1/inbox/bob", nil, forged()).wantError(t, http.StatusUnauthorized, protocol.CodeBadSignature)
	}
}
