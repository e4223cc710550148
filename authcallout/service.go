// Package authcallout owns how native NATS clients log in to kezd's NATS:
// the auth-callout responder on $SYS.REQ.USER.AUTH that verifies a client's
// kez signing key over the connection nonce and issues a short-lived user JWT
// with exactly PROTOCOL.md's permissions, signed with the deployment's issuer
// key (package deploykeys), and the nats-server configuration that matches
// the deployment's keys.
package authcallout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/faultlog"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
)

// serverXKeyHeader carries the requesting server's curve key when the request
// is sealed.
const serverXKeyHeader = "Nats-Server-Xkey"

// Defaults for Config.
const (
	DefaultTTL        = time.Hour
	DefaultQueueGroup = "kezd.authcallout"
	lookupTimeout     = 5 * time.Second
)

// HandleLookup finds the handle whose registered signing key is the given
// lowercase hex Ed25519 public key, or store.ErrNotFound.
type HandleLookup interface {
	HandleByKey(ctx context.Context, signingKeyHex string) (store.Handle, error)
}

// Config configures the callout service.
type Config struct {
	// Keys are the deployment's NATS keys; Issuer is required, XKey is needed
	// when the servers seal requests.
	Keys deploykeys.Keys
	// AppAccount is the account logged-in clients are placed in; default
	// broker.AccountApp.
	AppAccount string
	// TTL is how long an issued user JWT is valid; at expiry the server
	// disconnects the client, which logs in again. Default one hour.
	TTL time.Duration
	// Workers bounds how many requests are handled at once; default
	// 8×GOMAXPROCS (handling waits mostly on the store).
	Workers int
	// QueueGroup lets any number of instances answer; exactly one does.
	QueueGroup string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxConnsPerHandle caps a handle's NATS connections on one server
	// (see ConnCounter); 0 means no cap.
	MaxConnsPerHandle int
	// Conns counts connections for MaxConnsPerHandle; nil means no cap.
	Conns ConnCounter
	// Limits, when set, charges each login refused for its credentials to
	// the failed-authentication limit of the client's IP
	// (ratelimit.FailedAuth, the bucket failed HTTP authentications take
	// from too), and refuses the logins of an IP whose bucket is empty
	// before verifying them, until it refills. Nil is no limit.
	Limits Limiter
}

// Limiter is the rate limits the callout applies (*ratelimit.Limiter
// implements it; a nil *ratelimit.Limiter is limits off).
type Limiter interface {
	Take(ctx context.Context, name ratelimit.Name, key string, n float64) error
	Reserved(name ratelimit.Name, key string) error
}

// ConnCounter counts a handle's client connections on the server serverID,
// reporting false when it cannot (broker.Broker implements it for its
// embedded server).
type ConnCounter interface {
	HandleConnections(serverID, handle string) (int, bool)
}

// DefaultMaxConnsPerHandle is the default cap on a handle's NATS
// connections per server: a person's devices and tabs, several times over.
const DefaultMaxConnsPerHandle = 16

// Stats counts what the service has decided since it started.
type Stats struct {
	Authorized int64 // logins granted
	Rejected   int64 // logins refused
	Dropped    int64 // requests that could not be read or answered
}

// Service answers authorization requests. Start it with Start.
type Service struct {
	cfg    Config
	issuer string
	lookup HandleLookup
	conns  ConnCounter
	log    *slog.Logger
	resp   *broker.Responder

	authorized, rejected, dropped atomic.Int64
	refusals                      refusalLog
	faults                        *faultlog.Log // the limits' store
}

// refusalEvery is the least time between two log lines about refused
// logins: a flood of bad logins (anyone can try) writes one line per
// interval, with the count, and the rest go at debug level.
const refusalEvery = 10 * time.Second

// refusalLog summarises refused logins in the log.
type refusalLog struct {
	mu         sync.Mutex
	last       time.Time // of the last line at info
	suppressed int64     // refusals since then, logged at debug only
}

func (r *refusalLog) log(log *slog.Logger, now time.Time, attrs []any) {
	r.mu.Lock()
	if !r.last.IsZero() && now.Sub(r.last) < refusalEvery {
		r.suppressed++
		r.mu.Unlock()
		log.Debug("nats login refused", attrs...)
		return
	}
	n := r.suppressed
	r.last, r.suppressed = now, 0
	r.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, "refused_before_this_unlogged", n)
	}
	log.Info("nats login refused", attrs...)
}

// Start subscribes to broker.CalloutSubject on nc, which must be logged in as the callout
// service user in the auth account (Keys.ServiceUser), and answers requests
// until Stop. Requests are handled concurrently, at most cfg.Workers at a
// time; lookups run under ctx.
func Start(ctx context.Context, nc *nats.Conn, cfg Config, lookup HandleLookup, log *slog.Logger) (*Service, error) {
	if cfg.Keys.Issuer == nil {
		return nil, errors.New("auth callout: no issuer key")
	}
	issuer, err := cfg.Keys.Issuer.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("auth callout: issuer key: %w", err)
	}
	if cfg.AppAccount == "" {
		cfg.AppAccount = broker.AccountApp
	}
	if cfg.TTL <= 0 {
		cfg.TTL = DefaultTTL
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8 * runtime.GOMAXPROCS(0)
	}
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = DefaultQueueGroup
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Service{cfg: cfg, issuer: issuer, lookup: lookup, log: log, conns: cfg.Conns, faults: faultlog.New(log, 0)}
	if s.resp, err = broker.Respond(ctx, nc, broker.CalloutSubject, cfg.QueueGroup, cfg.Workers, s.handle); err != nil {
		return nil, fmt.Errorf("auth callout: %w", err)
	}
	return s, nil
}

// Stop stops answering and waits for requests in flight. Servers then refuse
// new logins (after their auth timeout) unless another instance answers;
// connections already logged in stay up until their JWT expires.
func (s *Service) Stop() { s.resp.Stop() }

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{Authorized: s.authorized.Load(), Rejected: s.rejected.Load(), Dropped: s.dropped.Load()}
}

func (s *Service) handle(ctx context.Context, m *nats.Msg) {
	data := m.Data
	serverXKey := m.Header.Get(serverXKeyHeader)
	if serverXKey != "" {
		if s.cfg.Keys.XKey == nil {
			s.drop("request is sealed but no xkey is configured")
			return
		}
		var err error
		if data, err = s.cfg.Keys.XKey.Open(m.Data, serverXKey); err != nil {
			s.drop("cannot open sealed request", "err", err)
			return
		}
	}
	req, err := jwt.DecodeAuthorizationRequestClaims(string(data))
	if err != nil {
		// Without the request's user key and server id no answer can be
		// addressed; the server times the login out.
		s.drop("undecodable request", "err", err)
		return
	}

	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	ip := ipKey(req.ClientInformation.Host)
	handle, err := "", s.reserved(ip)
	if err == nil {
		handle, err = authorize(ctx, s.lookup, req)
		s.chargeFailure(ctx, ip, err)
	}
	if err == nil && s.conns != nil && s.cfg.MaxConnsPerHandle > 0 {
		if n, ok := s.conns.HandleConnections(req.Server.ID, handle); ok && n >= s.cfg.MaxConnsPerHandle {
			err = reject("handle %q has %d NATS connections on this server, its limit", handle, n)
		}
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if err == nil {
		resp.Jwt, err = s.userJWT(req.UserNkey, handle)
	}
	if err != nil {
		resp.Error = s.refusal(req, err)
	}
	tok, err := resp.Encode(s.cfg.Keys.Issuer)
	if err != nil {
		s.drop("encode response", "err", err)
		return
	}
	out := []byte(tok)
	if serverXKey != "" {
		if out, err = s.cfg.Keys.XKey.Seal(out, serverXKey); err != nil {
			s.drop("seal response", "err", err)
			return
		}
	}
	// Count the decision before answering, so that whoever sees the login's
	// outcome also sees it counted.
	if resp.Error == "" {
		s.authorized.Add(1)
		s.log.Debug("nats login", "handle", handle, "client_host", req.ClientInformation.Host, "server", req.Server.Name)
	} else {
		s.rejected.Add(1)
	}
	if err := m.Respond(out); err != nil {
		s.drop("respond", "err", err)
	}
}

// ipKey is the failed-authentication bucket of a client's host, as HTTP
// keys it (ratelimit.IPKey); a host that is no address is its own key.
func ipKey(host string) string {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	return ratelimit.IPKey(addr)
}

// reserved refuses a login from ip while its failed-authentication bucket
// is empty: without verifying anything, and without a query.
func (s *Service) reserved(ip string) error {
	if s.cfg.Limits == nil {
		return nil
	}
	var r *ratelimit.Refused
	if err := s.cfg.Limits.Reserved(ratelimit.FailedAuth, ip); errors.As(err, &r) {
		return reject("too many failed logins from this address; retry after %s", r.RetryAfter.Round(time.Second))
	}
	return nil
}

// chargeFailure takes a token from ip's failed-authentication bucket when
// err refused the client's credentials (not when the store failed). A
// failure of the limits' own store is logged once per outage; the login is
// refused anyway.
func (s *Service) chargeFailure(ctx context.Context, ip string, err error) {
	var rj *rejection
	if s.cfg.Limits == nil || !errors.As(err, &rj) || rj.err != nil {
		return
	}
	const what = "failed-login limit"
	var r *ratelimit.Refused
	switch lerr := s.cfg.Limits.Take(ctx, ratelimit.FailedAuth, ip, 1); {
	case lerr == nil, errors.As(lerr, &r):
		s.faults.OK(what)
	default:
		s.faults.Fail(what, lerr)
	}
}

// refusal logs why a login was refused and returns the reason for the
// response (nats-server logs it; the client only sees an authorization
// violation). Credentials never reach the log: only public keys and names.
func (s *Service) refusal(req *jwt.AuthorizationRequestClaims, err error) string {
	attrs := []any{
		"client_host", req.ClientInformation.Host,
		"client_kind", req.ClientInformation.Type,
		"user", req.ConnectOptions.Username,
		"server", req.Server.Name,
	}
	var rj *rejection
	if errors.As(err, &rj) && rj.err == nil {
		s.refusals.log(s.log, s.cfg.Now(), append(attrs, "reason", rj.reason))
		return rj.reason
	}
	s.log.Error("nats login failed", append(attrs, "err", err)...)
	return "internal error"
}

// userJWT issues the JWT for handle: PROTOCOL.md's permissions, in the
// application account, valid for the TTL.
func (s *Service) userJWT(userNkey, handle string) (string, error) {
	uc := jwt.NewUserClaims(userNkey)
	uc.Name = handle
	uc.Audience = s.cfg.AppAccount
	// JWT expiry is in whole seconds: round up, so that a login lives at
	// least the TTL (rounded down, a 1 s TTL could expire at once).
	uc.Expires = s.cfg.Now().Add(s.cfg.TTL + time.Second - 1).Unix()
	uc.Permissions = Permissions(handle)
	tok, err := uc.Encode(s.cfg.Keys.Issuer)
	if err != nil {
		return "", fmt.Errorf("encode user jwt: %w", err)
	}
	return tok, nil
}

func (s *Service) drop(msg string, args ...any) {
	s.dropped.Add(1)
	s.log.Warn("auth callout: "+msg, args...)
}
