// Package client is the Go client for kezd: it registers handles, looks them
// up (directly or by WebFinger), sends end-to-end encrypted messages with
// idempotent retries, polls and long-polls an inbox, follows it with a stream
// that resumes by itself, and logs in to kezd's NATS with a kez key. It
// follows PROTOCOL.md; message bodies are sealed and opened with package
// envelope, so the server only ever sees ciphertext.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// Client talks to one kezd server. It is safe for concurrent use.
type Client struct {
	base      *url.URL
	http      *http.Client
	now       func() time.Time
	attempts  int
	backoff   Backoff
	webfinger func(domain string) string

	mu    sync.Mutex
	peers map[string]cachedPeer // current keys, cached for peerTTL; Open falls back to the key history
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client. It must not set a Timeout shorter than
// the longest long-poll, and a Timeout ends streams too; prefer contexts.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithClock sets the clock used for request timestamps.
func WithClock(now func() time.Time) Option { return func(c *Client) { c.now = now } }

// WithAttempts sets how many times Send tries a request in all (default 5).
func WithAttempts(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.attempts = n
		}
	}
}

// WithBackoff sets the delays between retries and stream reconnects.
func WithBackoff(b Backoff) Option { return func(c *Client) { c.backoff = b } }

// WithWebFingerBase sets how Resolve finds the WebFinger server of a domain:
// base returns the URL the /.well-known/webfinger path is appended to. The
// default is "https://" + domain; tests point it at a plain-HTTP server.
func WithWebFingerBase(base func(domain string) string) Option {
	return func(c *Client) { c.webfinger = base }
}

// Backoff is an exponential backoff with full jitter: the n-th retry waits a
// random duration up to min(Max, Min·2ⁿ).
type Backoff struct {
	Min time.Duration
	Max time.Duration
}

// DefaultBackoff is the backoff a Client uses unless told otherwise.
var DefaultBackoff = Backoff{Min: 200 * time.Millisecond, Max: 15 * time.Second}

// delay returns the wait before retry n (0-based).
func (b Backoff) delay(n int) time.Duration {
	ceil := b.Min
	for i := 0; i < n && ceil < b.Max; i++ {
		ceil *= 2
	}
	ceil = min(ceil, b.Max)
	if ceil <= 0 {
		return 0
	}
	// Full jitter spreads the reconnects of many clients after an outage.
	return rand.N(ceil) + 1
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// New returns a Client for the kezd server at baseURL (for example
// "https://kez.example"). It does no I/O.
func New(baseURL string, opts ...Option) (*Client, error) {
	u, err := url.Parse(strings.TrimRight(baseURL, "/"))
	if err != nil {
		return nil, fmt.Errorf("server URL: %w", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("server URL %q: want http(s)://host[:port]", baseURL)
	}
	c := &Client{
		base:      u,
		http:      &http.Client{},
		now:       time.Now,
		attempts:  5,
		backoff:   DefaultBackoff,
		webfinger: func(domain string) string { return "https://" + domain },
		peers:     map[string]cachedPeer{},
	}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// BaseURL is the server URL the client was created with.
func (c *Client) BaseURL() string { return c.base.String() }

// Handle is a registered handle and its public keys, lowercase hex: the
// protocol's handle record.
type Handle protocol.Handle

// Peer parses h's keys for sealing and verifying envelopes.
func (h *Handle) Peer() (envelope.Peer, error) {
	return envelope.ParsePeer(h.Handle, h.SigningKey, h.EncryptionKey)
}

// Message is a stored message as the server delivers it.
type Message = protocol.Message

// Register registers id's handle with its public keys.
func (c *Client) Register(ctx context.Context, id *envelope.Identity) (*Handle, error) {
	ts := c.now().Unix()
	sk, ek := id.SigningKeyHex(), id.EncryptionKeyHex()
	body, err := json.Marshal(protocol.RegisterRequest{
		Handle:        id.Handle,
		SigningKey:    sk,
		EncryptionKey: ek,
		TS:            ts,
		Sig:           identity.Sign(id.Signing, identity.RegisterString(id.Handle, sk, ek, ts)),
	})
	if err != nil {
		return nil, err
	}
	var h Handle
	if err := c.do(ctx, http.MethodPost, protocol.PathHandles, nil, body, "", &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Lookup returns the public keys of handle on this server.
func (c *Client) Lookup(ctx context.Context, handle string) (*Handle, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return nil, &Error{Code: protocol.CodeInvalidHandle, Message: err.Error()}
	}
	var h Handle
	if err := c.do(ctx, http.MethodGet, protocol.HandlePath(handle), nil, nil, "", &h); err != nil {
		return nil, err
	}
	if h.Handle != handle {
		return nil, fmt.Errorf("lookup %q: server answered for %q", handle, h.Handle)
	}
	return &h, nil
}

// peerTTL is how long a handle's keys are used without asking the server
// again: keys rotate, and a message should not be sealed to a retired key
// for long.
const peerTTL = time.Minute

type cachedPeer struct {
	peer    envelope.Peer
	expires time.Time
}

// peer returns handle's parsed keys, from the cache or the server.
func (c *Client) peer(ctx context.Context, handle string) (envelope.Peer, error) {
	c.mu.Lock()
	cached, ok := c.peers[handle]
	c.mu.Unlock()
	if ok && c.now().Before(cached.expires) {
		return cached.peer, nil
	}
	h, err := c.Lookup(ctx, handle)
	if err != nil {
		return envelope.Peer{}, err
	}
	p, err := h.Peer()
	if err != nil {
		return envelope.Peer{}, fmt.Errorf("keys of %q: %w", handle, err)
	}
	c.mu.Lock()
	c.peers[handle] = cachedPeer{peer: p, expires: c.now().Add(peerTTL)}
	c.mu.Unlock()
	return p, nil
}

// senderKeys resolves envelope senders through the registry; an unknown
// handle is envelope.ErrUnknownSender.
func (c *Client) senderKeys(ctx context.Context, handle string) (ed25519.PublicKey, error) {
	p, err := c.peer(ctx, handle)
	if IsCode(err, protocol.CodeUnknownHandle) {
		return nil, fmt.Errorf("%w: %q is not registered", envelope.ErrUnknownSender, handle)
	}
	if err != nil {
		return nil, err
	}
	return p.SigningKey, nil
}

// authHeader returns the Authorization value for a request signed by id.
func authHeader(id *envelope.Identity, ts int64, canonical string) string {
	return fmt.Sprintf("Kez %s:%d:%s", id.Handle, ts, identity.Sign(id.Signing, canonical))
}

// do sends one request and decodes a 2xx JSON answer into out, or returns
// the server's *Error. Network failures come back as they are.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body []byte, auth string, out any) error {
	resp, err := c.send(ctx, method, path, query, body, auth, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decode(resp, out)
}

func (c *Client) send(ctx context.Context, method, path string, query url.Values, body []byte, auth string, header http.Header) (*http.Response, error) {
	u := *c.base
	u.Path = c.base.Path + path
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, redactTransport(err)
	}
	return resp, nil
}

// maxResponse bounds what the client reads of a JSON answer: a full poll page
// of 1000 messages of 64 KiB envelopes, with room for the rest.
const maxResponse = 80 << 20

func decode(resp *http.Response, out any) error {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return readError(resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxResponse)).Decode(out); err != nil {
		return fmt.Errorf("decode %s answer: %w", resp.Request.URL.Path, err)
	}
	return nil
}

// errRetryable marks a failure worth retrying: the request may not have
// reached the server, or the server asked to come back later.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		switch e.Code {
		case protocol.CodeUnavailable, protocol.CodeRateLimited:
			return true
		}
		return e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable || e.Status == http.StatusGatewayTimeout
	}
	// Anything else is transport-level: a refused connection, a reset, an EOF.
	return true
}
