package httpapi

import (
	"context"
	"net"
	"net/netip"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
)

// Limiter is the rate limits the HTTP API applies itself (per client IP);
// *ratelimit.Limiter implements it, and a nil one is limits off.
type Limiter interface {
	Take(ctx context.Context, name ratelimit.Name, key string, n float64) error
	Reserved(name ratelimit.Name, key string) error
}

// ipExtractor returns how Echo finds a request's client IP: the peer
// address, or, when the peer is one of the trusted proxies, the last
// X-Forwarded-For hop that is not one of them. Echo's own default trusts
// every private and loopback address, which would let any client on such a
// network name its own IP.
func ipExtractor(trusted []netip.Prefix) echo.IPExtractor {
	if len(trusted) == 0 {
		return echo.ExtractIPDirect()
	}
	opts := []echo.TrustOption{echo.TrustLoopback(false), echo.TrustLinkLocal(false), echo.TrustPrivateNet(false)}
	for _, p := range trusted {
		opts = append(opts, echo.TrustIPRange(&net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}))
	}
	return echo.ExtractIPFromXFFHeader(opts...)
}

// clientIP is the bucket key of the request's client (see ratelimit.IPKey).
func clientIP(c echo.Context) string {
	addr, err := netip.ParseAddr(c.RealIP())
	if err != nil {
		// RealIP is the peer's host when the peer address has no port
		// (test recorders); one key for all of them is what they get.
		return c.RealIP()
	}
	return ratelimit.IPKey(addr)
}

// limitPerIP charges each request to name's bucket for its client IP.
func (s *Server) limitPerIP(name ratelimit.Name) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if s.limits == nil {
				return next(c)
			}
			if err := s.limits.Take(c.Request().Context(), name, clientIP(c), 1); err != nil {
				return limitError(err)
			}
			return next(c)
		}
	}
}

// limitError is a refusal as the client sees it (rate_limited), or the
// shared store's failure (unavailable).
func limitError(err error) error {
	if e := chat.AsError(err); e.Code == protocol.CodeRateLimited {
		return e
	}
	return &chat.Error{Code: protocol.CodeUnavailable, Message: "the store is unavailable; retry later", Err: err}
}

// authenticate is the core's Authenticate with the failed-authentication
// limit of the client's IP: an IP past it is refused before its signature
// is even checked, and each failure is charged to it; the failure that
// finds the bucket empty is answered 429 rather than 401.
func (s *Server) authenticate(c echo.Context, creds identity.Credentials, msg string) (store.Handle, error) {
	ctx := c.Request().Context()
	if s.limits == nil {
		return s.svc.Authenticate(ctx, creds, msg)
	}
	ip := clientIP(c)
	if err := s.limits.Reserved(ratelimit.FailedAuth, ip); err != nil {
		return store.Handle{}, limitError(err)
	}
	h, err := s.svc.Authenticate(ctx, creds, msg)
	if err == nil {
		return h, nil
	}
	switch chat.AsError(err).Code {
	case protocol.CodeBadSignature, protocol.CodeStaleTimestamp, protocol.CodeUnauthorized:
		switch lerr := s.limits.Take(ctx, ratelimit.FailedAuth, ip, 1); {
		case lerr == nil:
			s.faults.OK("failed-authentication limit")
		case chat.AsError(lerr).Code == protocol.CodeRateLimited:
			return store.Handle{}, limitError(lerr)
		default:
			// The store cannot take the charge: the failure is still
			// the answer, not a 503 for the store.
			s.faults.Fail("failed-authentication limit", lerr)
		}
	}
	return store.Handle{}, err
}
