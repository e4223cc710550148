// Package httpapi is kezd's HTTP gateway (Echo v4): the registry, signed
// sending, polling and long-polling, Server-Sent Events, WebFinger and the
// health endpoints. It turns requests into calls on the chat core and the
// core's errors into PROTOCOL.md responses, in one error handler.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/faultlog"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
)

// Service is what the HTTP API needs from the chat core; *chat.Service
// satisfies it.
type Service interface {
	Register(ctx context.Context, r protocol.RegisterRequest) (store.Handle, error)
	Lookup(ctx context.Context, handle string) (store.Handle, error)
	Authenticate(ctx context.Context, c identity.Credentials, msg string) (store.Handle, error)
	Send(ctx context.Context, from string, body []byte) (protocol.SendResult, error)
	Poll(ctx context.Context, owner store.Handle, since int64, limit int, wait time.Duration) ([]store.Message, error)
	Follow(ctx context.Context, owner store.Handle, cursor chat.Cursor, emit func(chat.Event) error) error

	Rotate(ctx context.Context, cur store.Handle, r chat.Rotation) (store.Handle, error)
	DeleteHandle(ctx context.Context, owner store.Handle) (protocol.Deletion, error)
	DeleteThrough(ctx context.Context, handle string, through int64) (protocol.DeleteResult, error)
	LookupAt(ctx context.Context, handle string, at time.Time) (store.Handle, error)
}

// Check is one readiness probe run by GET /readyz, such as "store" or "broker".
type Check struct {
	Name string
	Fn   func(ctx context.Context) error
}

// Defaults for the zero values of Config.
const (
	DefaultPingInterval        = 15 * time.Second
	DefaultMaxStreamsPerHandle = 8
	DefaultMaxStreamsPerIP     = 256
	DefaultMaxStreams          = 50000
	DefaultMaxPollsPerHandle   = 8
	DefaultMaxPollsPerIP       = 256
	DefaultMaxPolls            = 50000
	DefaultStreamWriteTimeout  = 10 * time.Second
	DefaultWriteTimeout        = 30 * time.Second
	DefaultReadHeaderTimeout   = 10 * time.Second
	DefaultReadTimeout         = 30 * time.Second
	DefaultIdleTimeout         = 120 * time.Second
	DefaultReadyTimeout        = 3 * time.Second
)

// maxRegisterBody bounds POST /v1/handles; a registration is a few hundred bytes.
const maxRegisterBody = 4 << 10

// Config holds the HTTP API's settings. Zero durations and counts take the
// Default values above.
type Config struct {
	// PublicURL is the URL clients use to reach this server; its host is the
	// WebFinger domain and it prefixes the links WebFinger returns. Nil means
	// http://localhost, which suits tests only.
	PublicURL *url.URL
	// WebFingerAliases are further domains WebFinger answers for (with the
	// links still under PublicURL), such as the bare domain when the API is
	// served from a subdomain. No other domain is ever ours.
	WebFingerAliases []string
	// NATSURL, when set, is advertised by WebFinger as the
	// https://kez.chat/rel/nats link.
	NATSURL string

	// PingInterval is how often an idle stream gets a ": ping" comment.
	PingInterval time.Duration
	// MaxStreamsPerHandle caps open streams per handle (deployment-wide with SharedCaps);
	// beyond it, 429 rate_limited.
	MaxStreamsPerHandle int
	// MaxStreams caps all open streams on this instance (each holds a
	// connection and about 15 KiB); beyond it, 429 rate_limited, so that
	// clients go to another instance or retry.
	MaxStreams int
	// MaxStreamsPerIP caps open streams per client IP on this instance
	// (an IPv6 client's /64); beyond it, 429 rate_limited.
	MaxStreamsPerIP int
	// MaxPolls, MaxPollsPerHandle and MaxPollsPerIP cap waiting long-polls
	// (wait > 0) as the stream caps cap streams: each holds a connection.
	MaxPolls          int
	MaxPollsPerHandle int
	MaxPollsPerIP     int
	// StreamWriteTimeout bounds each write to a stream; a reader that cannot
	// take an event within it is too slow and its stream ends.
	StreamWriteTimeout time.Duration

	// WriteTimeout bounds writing the response of an ordinary request (a
	// long-poll gets its wait on top). It is set per request, not on the
	// http.Server, so streams are not cut off.
	WriteTimeout time.Duration
	// ReadHeaderTimeout, ReadTimeout and IdleTimeout configure the
	// http.Server that HTTPServer returns.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	IdleTimeout       time.Duration

	// Web, when set, serves the browser app at GET and HEAD of "/" and
	// "/assets/*" (package web's Handler).
	Web http.Handler
	// Limits are the rate limits per client IP (registrations, failed
	// authentications); nil is limits off.
	Limits Limiter
	// SharedCaps, when set, makes the per-handle and per-IP caps of streams
	// and long-polls hold for every instance that shares it (Postgres); nil
	// counts them on this instance only. The per-instance caps stay local.
	SharedCaps SharedCaps
	// TrustedProxies are the peers whose X-Forwarded-For names the client
	// IP; from any other peer the client IP is the peer's address.
	TrustedProxies []netip.Prefix

	// Ready lists the checks GET /readyz runs; ReadyTimeout bounds them.
	Ready        []Check
	ReadyTimeout time.Duration
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PingInterval, DefaultPingInterval)
	def(&c.StreamWriteTimeout, DefaultStreamWriteTimeout)
	def(&c.WriteTimeout, DefaultWriteTimeout)
	def(&c.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	def(&c.ReadTimeout, DefaultReadTimeout)
	def(&c.IdleTimeout, DefaultIdleTimeout)
	def(&c.ReadyTimeout, DefaultReadyTimeout)
	if c.MaxStreamsPerHandle <= 0 {
		c.MaxStreamsPerHandle = DefaultMaxStreamsPerHandle
	}
	for _, d := range []struct {
		p *int
		v int
	}{
		{&c.MaxStreams, DefaultMaxStreams}, {&c.MaxStreamsPerIP, DefaultMaxStreamsPerIP},
		{&c.MaxPolls, DefaultMaxPolls}, {&c.MaxPollsPerHandle, DefaultMaxPollsPerHandle}, {&c.MaxPollsPerIP, DefaultMaxPollsPerIP},
	} {
		if *d.p <= 0 {
			*d.p = d.v
		}
	}
}

// Server is the HTTP API. Create it with New; serve Handler, or the
// http.Server from HTTPServer.
type Server struct {
	cfg  Config
	svc  Service
	log  *slog.Logger
	echo *echo.Echo
	base string // PublicURL without a trailing slash, for links

	limits Limiter
	shared SharedCaps
	faults *faultlog.Log // of shared

	// closing is cancelled by CloseStreams; streams and long-polls end with it.
	closing   context.Context
	closeOnce context.CancelFunc

	mu       sync.Mutex
	streams  *caps                                   // open streams
	polls    *caps                                   // waiting long-polls
	detached map[string]map[*detachedStream]struct{} // per handle, for reaping
	wg       sync.WaitGroup                          // open streams, detached ones included

	frames sync.Pool  // *[]byte buffers of stream writes, between bursts
	pings  *pingWheel // every stream's pings

	slowStreams atomic.Int64 // streams ended for missing a catch-up page's drain deadline
}

// detachedStream is what the server knows of a stream running on a
// connection it took over, so that it can end it when its client is gone.
type detachedStream struct {
	conn   net.Conn
	cancel context.CancelFunc
	done   chan struct{} // closed when the stream has given back its slot
}

// New returns a Server for svc. It does no I/O.
func New(cfg Config, svc Service, log *slog.Logger) *Server {
	cfg.setDefaults()
	if cfg.PublicURL == nil {
		cfg.PublicURL = &url.URL{Scheme: "http", Host: "localhost"}
	}
	closing, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:       cfg,
		svc:       svc,
		log:       log,
		base:      strings.TrimSuffix(cfg.PublicURL.String(), "/"),
		closing:   closing,
		closeOnce: cancel,
		limits:    cfg.Limits,
		shared:    cfg.SharedCaps,
		faults:    faultlog.New(log, 0),
		streams:   newCaps("streams", cfg.MaxStreams, cfg.MaxStreamsPerHandle, cfg.MaxStreamsPerIP),
		polls:     newCaps("long-polls", cfg.MaxPolls, cfg.MaxPollsPerHandle, cfg.MaxPollsPerIP),
		detached:  make(map[string]map[*detachedStream]struct{}),
		pings:     newPingWheel(cfg.PingInterval),
	}

	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = ipExtractor(cfg.TrustedProxies)
	e.Use(s.recoverPanic, responseHeaders)

	timed := s.writeDeadline
	e.POST(protocol.PathHandles, s.register, timed, s.limitPerIP(ratelimit.Registrations))
	// The unauthenticated reads answer HEAD as GET, without the body (RFC
	// 9110 §9.3.2; net/http drops it). The signed ones are signed for GET.
	e.Match([]string{http.MethodGet, http.MethodHead}, protocol.HandlePath(":handle"), s.lookup, timed)
	e.DELETE(protocol.HandlePath(":handle"), s.deleteHandle, timed)
	e.POST(protocol.KeysPath(":handle"), s.rotate, timed)
	e.DELETE(protocol.InboxPath(":handle"), s.deleteThrough, timed)
	e.POST(protocol.PathMessages, s.send, timed)
	e.GET(protocol.InboxPath(":handle"), s.poll, timed)
	e.GET(protocol.StreamPath(":handle"), s.stream)
	e.Match([]string{http.MethodGet, http.MethodHead}, protocol.PathWebFinger, s.webfinger, timed)
	e.Match([]string{http.MethodGet, http.MethodHead}, "/healthz", s.healthz, timed)
	e.Match([]string{http.MethodGet, http.MethodHead}, "/readyz", s.readyz, timed)
	if cfg.Web != nil {
		web := echo.WrapHandler(cfg.Web)
		for _, p := range []string{"/", "/assets/*"} {
			e.GET(p, web, timed)
			e.HEAD(p, web, timed)
		}
	}
	s.echo = e
	return s
}

// Handler returns the HTTP handler serving the API.
func (s *Server) Handler() http.Handler { return s.echo }

// HTTPServer returns an http.Server for the API on addr with the configured
// timeouts. It has no WriteTimeout, which would cut streams off; ordinary
// requests get a per-request write deadline instead. Shutting it down calls
// CloseStreams, so open streams and long-polls end and Shutdown can finish.
func (s *Server) HTTPServer(addr string) *http.Server {
	srv := &http.Server{
		Addr:              addr,
		Handler:           s.echo,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	srv.RegisterOnShutdown(s.CloseStreams)
	return srv
}

// CloseStreams ends every open stream and long-poll, and makes new ones
// fail with 503, so that a graceful shutdown is not held up by them. Clients
// reconnect (to another instance) with Last-Event-ID and lose nothing.
// WaitStreams waits for the streams to end. http.Server's Shutdown does not
// wait for them: a stream on HTTP/1.1 leaves net/http once it is authorised
// (see detach).
func (s *Server) CloseStreams() { s.closeOnce() }

// WaitStreams blocks until every stream has ended, whether it runs in its
// handler or detached from net/http, or ctx ends.
func (s *Server) WaitStreams(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writeDeadline bounds how long an ordinary response may take to write, so
// a client that stops reading cannot hold a connection forever.
func (s *Server) writeDeadline(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		rc := http.NewResponseController(c.Response())
		// Not every ResponseWriter supports deadlines (httptest recorders);
		// then the server's own timeouts are all there is.
		_ = rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
		return next(c)
	}
}

// responseHeaders sets what every answer carries unless its handler says
// otherwise: nosniff, so that a browser never reads an answer (an error
// echoing input, an envelope) as something other than its Content-Type;
// and no-store, since API answers are per-request and keys change. A
// handler whose answer may be cached (static files) sets its own
// Cache-Control; the stream sets no-cache, as PROTOCOL.md says.
func responseHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set(echo.HeaderCacheControl, "no-store")
		return next(c)
	}
}

// recoverPanic turns a handler panic into a 500, with the panic logged.
func (s *Server) recoverPanic(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return next(c)
	}
}

// acquireStream counts a new stream for handle from ip, or refuses it when
// the handle or the IP has too many open here or the server is closing. At the cap it
// first ends the handle's detached streams whose clients have gone (a
// browser reloading a page closes its old connection, which nothing reads
// until the next ping), so that reconnecting is not refused for them.
func (s *Server) acquireStream(ctx context.Context, handle, ip string) (release func(), err error) {
	release, err = s.tryAcquire(ctx, s.streams, handle, ip)
	if e := (*chat.Error)(nil); errors.As(err, &e) && e.Code == protocol.CodeRateLimited && s.reapClosed(handle) > 0 {
		release, err = s.tryAcquire(ctx, s.streams, handle, ip)
	}
	return release, err
}

// reapClosed ends handle's detached streams whose clients have closed
// their connections, waits (briefly) for them to give their slots back,
// and returns how many it ended.
func (s *Server) reapClosed(handle string) int {
	s.mu.Lock()
	var dead []*detachedStream
	for d := range s.detached[handle] {
		if peerClosed(d.conn) {
			dead = append(dead, d)
		}
	}
	s.mu.Unlock()
	timeout := time.NewTimer(s.cfg.StreamWriteTimeout)
	defer timeout.Stop()
	for _, d := range dead {
		d.cancel()
		select {
		case <-d.done:
		case <-timeout.C:
			return len(dead)
		}
	}
	return len(dead)
}

// trackDetached registers a detached stream of handle for reaping; the
// returned func unregisters it.
func (s *Server) trackDetached(handle string, d *detachedStream) (untrack func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.detached[handle] == nil {
		s.detached[handle] = make(map[*detachedStream]struct{})
	}
	s.detached[handle][d] = struct{}{}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.detached[handle], d)
		if len(s.detached[handle]) == 0 {
			delete(s.detached, handle)
		}
	}
}

// tryAcquire counts one more in k (streams or long-polls), or refuses it.
// Both count in WaitStreams, so shutdown waits for them. The local count
// comes first and is the fast path; with shared caps, a lease of the
// deployment's count is then taken as well. When the store fails, the local
// count alone decides (the fault is logged once per outage): an outage
// neither refuses every stream nor lifts the caps, which still hold per
// instance.
func (s *Server) tryAcquire(ctx context.Context, k *caps, handle, ip string) (release func(), err error) {
	s.mu.Lock()
	if s.closing.Err() != nil {
		s.mu.Unlock()
		return nil, chat.Errorf(protocol.CodeUnavailable, "the server is shutting down; reconnect")
	}
	if err := k.acquire(handle, ip); err != nil {
		s.mu.Unlock()
		return nil, err
	}
	s.wg.Add(1)
	s.mu.Unlock()
	local := func() {
		s.mu.Lock()
		k.release(handle, ip)
		s.mu.Unlock()
		s.wg.Done()
	}
	if s.shared == nil {
		return local, nil
	}
	what := "shared " + k.what + " caps"
	id, handleOpen, _, ok, err := s.shared.AcquireLease(ctx, k.what, handle, ip, k.perHandle, k.perIP)
	switch {
	case err != nil:
		s.faults.Fail(what, err)
		return local, nil
	case !ok:
		s.faults.OK(what)
		local()
		s.mu.Lock()
		defer s.mu.Unlock()
		if handleOpen >= k.perHandle {
			return nil, k.refuse("per_handle", "handle %q has %d %s open, its limit; close one first", handle, k.perHandle, k.what)
		}
		return nil, k.refuse("per_ip", "your address has %d %s open, its limit; close one first", k.perIP, k.what)
	}
	s.faults.OK(what)
	return func() {
		// Not the request's context, which may be over; a lease left behind
		// expires by itself.
		rctx, cancel := context.WithTimeout(context.Background(), leaseReleaseTimeout)
		defer cancel()
		if err := s.shared.ReleaseLease(rctx, id); err != nil {
			s.faults.Fail(what, err)
		}
		local()
	}, nil
}

// leaseReleaseTimeout bounds giving back a shared lease.
const leaseReleaseTimeout = 5 * time.Second
