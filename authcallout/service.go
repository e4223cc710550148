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
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
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
	// MaxConnsPerHandle caps a handle's NATS connections (see ConnCounter
	// and Leases); 0 means no cap.
	MaxConnsPerHandle int
	// Conns counts connections for MaxConnsPerHandle; nil means no cap.
	Conns ConnCounter
	// Kicker, when set, closes the connections of the logins this callout
	// granted, or is deciding, with a signing key that Revoked retires (see
	// inflight.go); broker.Broker implements it.
	Kicker ClientKicker
	// ServerID is the embedded server this instance runs ("" for none), and
	// Peers kezd's own connection (broker.Broker.Conn). With both, the
	// callouts of clustered instances pass each request to the instance
	// running the client's server, which alone sees its connections: the
	// servers' queue group picks any instance's callout, the local one no
	// more often than another.
	ServerID string
	Peers    *nats.Conn
	// Leases, when set, makes MaxConnsPerHandle hold for the deployment
	// rather than per server: each login the callout grants on a server
	// Conns sees takes a lease (*postgres.Leases implements it, kind
	// LeaseKind), which this instance renews while the connection is open
	// and gives back once Conns reports it closed. Nil keeps the count of
	// the one server.
	Leases ConnLeases
	// Limits, when set, charges each login refused for its credentials to
	// the failed-authentication limit of the client's IP
	// (ratelimit.FailedAuth, the bucket failed HTTP authentications take
	// from too), and refuses the logins of an IP whose bucket is empty
	// before verifying them, until it refills. Nil is no limit.
	Limits Limiter
	// TrustedProxies are peers (the HTTP API's --trusted-proxies) whose
	// clients' logins Limits does not charge: the host a server reports is
	// the peer's (nats-server does not pass a WebSocket's X-Forwarded-For on
	// to the callout), which every client behind the proxy shares, so one
	// client's failures would lock all of them out.
	TrustedProxies []netip.Prefix
}

// Limiter is the rate limits the callout applies (*ratelimit.Limiter
// implements it; a nil *ratelimit.Limiter is limits off).
type Limiter interface {
	Take(ctx context.Context, name ratelimit.Name, key string, n float64) error
	Reserved(name ratelimit.Name, key string) error
}

// ConnCounter lists a handle's client connections on the server serverID
// (or on every server, where it can ask them all) and tells whether the
// connection cid is still open there, reporting false when it cannot
// (broker.Broker implements it: both for its embedded server, the count for
// an external NATS through a system user).
type ConnCounter interface {
	HandleClients(serverID, handle string) ([]broker.Client, bool)
	ClientOpen(serverID string, cid uint64) (open, ok bool)
}

// ClientKicker closes the connection cid on the server serverID, whether
// its login is decided yet or not, or says why it cannot (broker.Broker:
// its embedded server, or an external NATS through a system user).
type ClientKicker interface {
	KickClient(serverID string, cid uint64) error
}

// ConnLeases is the deployment's count of open things (*postgres.Leases,
// the stream leases of package httpapi): AcquireLease takes a lease of kind
// for handle when fewer than perHandle are open for it, and fewer than
// perIP for ip (perIP 0: no per-IP cap, nothing counted or locked for ip),
// in the whole deployment; ReleaseLeases gives several back in one
// statement.
type ConnLeases interface {
	AcquireLease(ctx context.Context, kind, handle, ip string, perHandle, perIP int) (id int64, handleOpen, ipOpen int, ok bool, err error)
	ReleaseLeases(ctx context.Context, ids []int64) error
}

// LeaseKind is the kind of the leases NATS logins take.
const LeaseKind = "nats-connections"

// DefaultMaxConnsPerHandle is the default cap on a handle's NATS
// connections per server: a person's devices and tabs, several times over.
const DefaultMaxConnsPerHandle = 16

// Stats counts what the service has decided since it started.
type Stats struct {
	Authorized int64 // logins granted
	Rejected   int64 // logins refused
	Dropped    int64 // requests that could not be read or answered
	// CapRefused counts the Rejected refused at MaxConnsPerHandle.
	CapRefused int64
	// Forwarded counts requests passed on to the instance running the
	// client's server (see Config.Peers), for it to decide.
	Forwarded int64
}

// Service answers authorization requests. Start it with Start.
type Service struct {
	cfg    Config
	nc     *nats.Conn // the callout's own connection
	issuer string
	lookup HandleLookup
	conns  ConnCounter
	log    *slog.Logger
	resp   *broker.Responder
	fwd    *broker.Responder // forwarded requests; nil without Peers
	kicks  *broker.Responder // kicks of this server's logins by other instances; nil without Peers or Kicker
	// fwdWaits bounds the workers waiting for another instance to take a
	// request (forward), so that a slow peer cannot hold them all.
	fwdWaits chan struct{}

	authorized, rejected, dropped atomic.Int64
	capRefused, forwarded         atomic.Int64
	refusals                      faultlog.Summary // refused logins
	faults                        *faultlog.Log    // the limits' and leases' store

	mu        sync.Mutex
	held      map[int64]connLease // leases of open logins, by lease id
	logins    inflight            // logins whose server may still set them up
	stopSweep context.CancelFunc
	swept     chan struct{} // closed when the sweep has stopped
}

// connLease is a login's lease: connection cid on server, which the
// server closes by until, when the login's JWT expires (with leaseSlack for
// the clocks), so that the lease is given back then at the latest, even if
// nothing said the connection closed (see broker.Broker.ClientOpen).
type connLease struct {
	server, handle string
	cid            uint64
	until          time.Time
	seq            uint64 // orders the reservations of inflight.byHandle
}

// leaseSlack is how long past its JWT's expiry a login's lease is kept:
// the server's clock may be behind this instance's.
const leaseSlack = 5 * time.Second

// sweepEvery is how often the logins' leases are checked against the
// connections still open: a connection closed on this instance's server
// frees its slot in the deployment within it.
const sweepEvery = time.Second

// refusalEvery is the least time between two log lines about refused
// logins: a flood of bad logins (anyone can try) writes one line per
// interval, with the count, and the rest go at debug level.
const refusalEvery = 10 * time.Second

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
	s := &Service{cfg: cfg, nc: nc, issuer: issuer, lookup: lookup, log: log, conns: cfg.Conns, faults: faultlog.New(log, 0),
		fwdWaits: make(chan struct{}, max(1, cfg.Workers/2)),
		refusals: faultlog.Summary{Every: refusalEvery, CountKey: "refused_before_this_unlogged"}}
	if cfg.Leases != nil {
		s.held = map[int64]connLease{}
		var sweepCtx context.Context
		sweepCtx, s.stopSweep = context.WithCancel(context.WithoutCancel(ctx))
		s.swept = make(chan struct{})
		go s.runSweep(sweepCtx)
	}
	if s.resp, err = broker.Respond(ctx, nc, broker.CalloutSubject, cfg.QueueGroup, cfg.Workers, s.handle); err != nil {
		s.ReleaseLeases()
		return nil, fmt.Errorf("auth callout: %w", err)
	}
	if cfg.Peers != nil && cfg.ServerID != "" {
		if !serverToken.MatchString(cfg.ServerID) {
			s.Stop()
			s.ReleaseLeases()
			return nil, fmt.Errorf("auth callout: server id %q cannot name a subject", cfg.ServerID)
		}
		if s.fwd, err = broker.Respond(ctx, cfg.Peers, ForwardSubject(cfg.ServerID), cfg.QueueGroup, cfg.Workers, s.handleForwarded); err != nil {
			s.Stop()
			s.ReleaseLeases()
			return nil, fmt.Errorf("auth callout: %w", err)
		}
		if cfg.Kicker != nil {
			if s.kicks, err = broker.Respond(ctx, cfg.Peers, KickSubject(cfg.ServerID), cfg.QueueGroup, 1, s.handleKick); err != nil {
				s.Stop()
				s.ReleaseLeases()
				return nil, fmt.Errorf("auth callout: %w", err)
			}
		}
	}
	return s, nil
}

// Stop stops answering and waits for requests in flight. Servers then refuse
// new logins (after their auth timeout) unless another instance answers;
// connections already logged in stay up until their JWT expires.
// The leases of its logins stay taken, as their connections are still
// open: give them back with ReleaseLeases once they are closed.
func (s *Service) Stop() {
	s.resp.Stop()
	if s.fwd != nil {
		s.fwd.Stop()
	}
	if s.kicks != nil {
		s.kicks.Stop()
	}
	s.stopSweeping()
}

// ReleaseLeases gives back every lease its logins hold, in one statement
// (waiting at most leaseReleaseTimeout), and stops checking them against
// open connections. Call it after the server has closed the connections the
// leases cover (broker.Broker.Close), so that none of them is open
// uncounted: the instance stops with them. Without Leases it does nothing.
func (s *Service) ReleaseLeases() {
	if s.stopSweep == nil {
		return
	}
	s.stopSweeping()
	ctx, cancel := context.WithTimeout(context.Background(), leaseReleaseTimeout)
	defer cancel()
	s.mu.Lock()
	ids := make([]int64, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	clear(s.held)
	s.mu.Unlock()
	s.release(ctx, ids)
}

// stopSweeping stops the sweep and waits for it; again is a no-op.
func (s *Service) stopSweeping() {
	if s.stopSweep == nil {
		return
	}
	s.stopSweep()
	<-s.swept
}

// Stats returns the counters.
func (s *Service) Stats() Stats {
	return Stats{Authorized: s.authorized.Load(), Rejected: s.rejected.Load(), Dropped: s.dropped.Load(),
		CapRefused: s.capRefused.Load(), Forwarded: s.forwarded.Load()}
}

// handle answers a request a server sent, unless it passes it on to the
// instance running that server.
func (s *Service) handle(ctx context.Context, m *nats.Msg) {
	s.answer(ctx, m, m.Respond, true)
}

// handleForwarded answers a request another instance passed on: to the
// server's reply subject, through the callout's own connection.
func (s *Service) handleForwarded(ctx context.Context, m *nats.Msg) {
	reply := m.Header.Get(forwardedReplyHeader)
	if !strings.HasPrefix(reply, calloutReplyPrefix) {
		s.drop("forwarded request without the server's reply subject")
		return
	}
	// Taken: the forwarding instance stops waiting.
	_ = m.Respond(nil)
	s.answer(ctx, m, func(out []byte) error { return s.nc.Publish(reply, out) }, false)
}

// answer decides the request m and sends the answer with respond. With
// mayForward, a request from another instance's embedded server goes to
// that instance instead (see Config.Peers), unless it cannot be reached.
func (s *Service) answer(ctx context.Context, m *nats.Msg, respond func([]byte) error, mayForward bool) {
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
	if mayForward && s.forward(ctx, req, m) {
		return
	}

	ctx, cancel := context.WithTimeout(ctx, lookupTimeout)
	defer cancel()
	// Recorded before its key is looked up, for Revoked (inflight.go).
	key, login := "", connLease{server: req.Server.ID, cid: req.ClientInformation.ID, until: loginUntil(req, s.cfg.Now())}
	if s.cfg.Kicker != nil {
		if key = presentedKey(req); key != "" {
			s.logins.begin(key, login, s.cfg.Now())
		}
	}
	ip := s.ipKey(req.ClientInformation.Host)
	handle, err := "", s.reserved(ip)
	if err == nil {
		handle, err = authorize(ctx, s.lookup, req)
		s.chargeFailure(ctx, ip, err)
	}
	resp := jwt.NewAuthorizationResponseClaims(req.UserNkey)
	resp.Audience = req.Server.ID
	if err == nil {
		resp.Jwt, err = s.userJWT(req.UserNkey, handle)
	}
	if err == nil {
		login.handle = handle
		err = s.admit(ctx, req, login, req.ClientInformation.Host)
	}
	if err != nil {
		resp.Jwt, resp.Error = "", s.refusal(req, err)
		s.logins.end(key, login)
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
	if err := respond(out); err != nil {
		s.drop("respond", "err", err)
	}
}

// Revoked closes the connections of the logins this callout granted, or is
// deciding, with a signing key rev retires, whether their servers have set
// them up yet or not: the broker's revocation kick (broker.OnRevocation)
// cannot see those not yet set up. Call it for every revocation announced,
// before the broker's kick. See inflight.go for why this is enough.
func (s *Service) Revoked(rev chat.Revocation) {
	if s.cfg.Kicker == nil {
		return
	}
	// The kicks another instance makes for us are each a round trip (up to
	// kickForwardWait): all at once, so that the revocation waits for one.
	var wg sync.WaitGroup
	for _, l := range s.logins.take(rev.Handle, rev.Keys, s.cfg.Now()) {
		err := s.cfg.Kicker.KickClient(l.server, l.cid)
		if !errors.Is(err, broker.ErrCannotKick) {
			s.kicked(rev.Handle, l, err)
			continue
		}
		// Another instance's embedded server, whose login this callout
		// answered (see forwardWait): that instance closes it.
		wg.Go(func() { s.kicked(rev.Handle, l, s.kickElsewhere(l.server, l.cid)) })
	}
	wg.Wait()
}

// kicked logs how closing the login l of a retired key of handle went.
func (s *Service) kicked(handle string, l connLease, err error) {
	switch {
	case err == nil:
		s.log.Info("nats login closed: its key was revoked while it was being set up", "handle", handle, "server", l.server, "cid", l.cid)
	case errors.Is(err, broker.ErrCannotKick) || errors.Is(err, errNoPeer):
		s.log.Warn("revocation: cannot close a login of a retired key on another instance's server; it is closed only if set up by the time that instance lists its connections", "handle", handle, "server", l.server, "cid", l.cid, "err", err)
	default:
		// Closed already, most often: refused, or gone.
		s.log.Debug("revocation: cannot close a login of a retired key", "handle", handle, "server", l.server, "cid", l.cid, "err", err)
	}
}

// Kicks between instances: a login one instance's callout answered for
// another's embedded server (forwardWait) can only be closed by the
// instance running that server. The request's data is the connection's ID
// in decimal; the reply is empty, or the error's text.

// kickForwardSubject is where the instance running server <id> takes kicks
// of its server's connections; kickForwardWait bounds waiting for it.
const (
	kickForwardSubject = "kezd.internal.kick."
	kickForwardWait    = time.Second
)

// KickSubject is the subject on which the instance running serverID takes
// kicks of its connections.
func KickSubject(serverID string) string { return kickForwardSubject + serverID }

// errNoPeer: no instance took the kick.
var errNoPeer = errors.New("no instance runs that server, or it did not answer")

// kickElsewhere asks the instance running serverID to close cid there.
func (s *Service) kickElsewhere(serverID string, cid uint64) error {
	if s.cfg.Peers == nil || !serverToken.MatchString(serverID) {
		return broker.ErrCannotKick
	}
	m, err := s.cfg.Peers.Request(KickSubject(serverID), strconv.AppendUint(nil, cid, 10), kickForwardWait)
	if err != nil {
		return fmt.Errorf("%w: %v", errNoPeer, err)
	}
	if len(m.Data) > 0 {
		return errors.New(string(m.Data))
	}
	return nil
}

// handleKick closes, on this instance's server, the connection another
// instance asks it to (kickElsewhere).
func (s *Service) handleKick(_ context.Context, m *nats.Msg) {
	var reply []byte
	cid, err := strconv.ParseUint(string(m.Data), 10, 64)
	if err == nil {
		err = s.cfg.Kicker.KickClient(s.cfg.ServerID, cid)
	}
	if err != nil {
		reply = []byte(err.Error())
	}
	if m.Reply != "" {
		_ = m.Respond(reply)
	}
}

// Forwarding requests between instances (Config.Peers).
const (
	// forwardSubject is where the instance running server <id> takes the
	// requests of its server that another instance received.
	forwardSubject = "kezd.internal.callout."
	// forwardedReplyHeader carries the server's reply subject.
	forwardedReplyHeader = "Kez-Callout-Reply"
	// calloutReplyPrefix is what a server's reply subject starts with
	// (broker.CalloutReplies).
	calloutReplyPrefix = "$SYS._INBOX."
	// forwardWait bounds waiting for the other instance to take one: it
	// takes it at once unless it is overloaded, and a worker waits
	// meanwhile.
	forwardWait = 250 * time.Millisecond
	// forwardMargin is the part of a request's remaining time (to its
	// expiry, the server's auth timeout) that waiting leaves for answering
	// it here when the other instance did not take it: the lookup, the
	// lease, and clocks a little apart. Without it, the server gives up on
	// the login before the answer comes.
	forwardMargin = 500 * time.Millisecond
)

// ForwardSubject is where the instance running the server serverID takes
// that server's requests from other instances (in the application account).
func ForwardSubject(serverID string) string { return forwardSubject + serverID }

// serverToken is what a server ID must look like to name a subject.
var serverToken = regexp.MustCompile(`^[A-Za-z0-9]{1,128}$`)

// forward passes m, the request req of its server, to the instance running
// that server when it is another instance's embedded server, and reports
// whether that instance took it. It waits for that at most forwardWait, and
// leaves forwardMargin of the request's time: a request not taken by then
// (nobody runs that server any more, or it is too slow), or with too little
// time left to wait at all, is answered here, while the server still waits
// for the answer. While half the workers wait on forwards already, a
// request is passed on without waiting, so that a slow instance holds up
// neither the logins of other servers nor the dispatch of requests.
func (s *Service) forward(ctx context.Context, req *jwt.AuthorizationRequestClaims, m *nats.Msg) bool {
	serverID := req.Server.ID
	if s.cfg.Peers == nil || s.cfg.ServerID == "" || serverID == s.cfg.ServerID || !serverToken.MatchString(serverID) {
		return false
	}
	wait := forwardWait
	if req.Expires > 0 {
		wait = min(wait, time.Unix(req.Expires, 0).Sub(s.cfg.Now())-forwardMargin)
	}
	if wait <= 0 {
		s.log.Debug("auth callout: too little time left to pass a login on to its server's instance; answering here", "server", serverID)
		return false
	}
	fm := nats.NewMsg(ForwardSubject(serverID))
	fm.Data = m.Data
	fm.Header.Set(forwardedReplyHeader, m.Reply)
	if x := m.Header.Get(serverXKeyHeader); x != "" {
		fm.Header.Set(serverXKeyHeader, x)
	}
	select {
	case s.fwdWaits <- struct{}{}:
		defer func() { <-s.fwdWaits }()
	default:
		if err := s.cfg.Peers.PublishMsg(fm); err != nil {
			s.log.Debug("auth callout: cannot pass a login on to its server's instance; answering here", "server", serverID, "err", err)
			return false
		}
		s.forwarded.Add(1)
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if _, err := s.cfg.Peers.RequestMsgWithContext(ctx, fm); err != nil {
		s.log.Debug("auth callout: the instance of the client's server did not take its login; answering here", "server", serverID, "err", err)
		return false
	}
	s.forwarded.Add(1)
	return true
}

// ipKey is the failed-authentication bucket of a client's host, as HTTP
// keys it (ratelimit.IPKey); a host that is no address is its own key. It
// is "" (no bucket) for a trusted proxy.
func (s *Service) ipKey(host string) string {
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(addr.Unmap()) {
			return ""
		}
	}
	return ratelimit.IPKey(addr)
}

// reserved refuses a login from ip while its failed-authentication bucket
// is empty: without verifying anything, and without a query.
func (s *Service) reserved(ip string) error {
	if s.cfg.Limits == nil || ip == "" {
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
	if s.cfg.Limits == nil || ip == "" || !errors.As(err, &rj) || rj.err != nil {
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

// admit applies MaxConnsPerHandle to the login l: first the count Conns
// gives (the client's server's without a query, when that is this
// instance's embedded server; every server's, asked through the system
// account, with an external NATS), with this instance's logins of the
// handle granted but not yet among them (reserved first: see inflight.go),
// then, with Leases and this instance's
// embedded server, the deployment's, taking a lease: leases are taken only
// where this instance can tell when the connection closes. The cap does
// not apply when Conns gives no count and takes no lease (another
// instance's embedded server, whose own callout normally answers: see
// docs/protocol.md; an external NATS without a system user, or whose
// servers do not answer). When the leases' store fails, the server's count
// alone decides.
func (s *Service) admit(ctx context.Context, req *jwt.AuthorizationRequestClaims, l connLease, ip string) error {
	limit, handle := s.cfg.MaxConnsPerHandle, l.handle
	if s.conns == nil || limit <= 0 {
		return nil
	}
	seq := s.logins.reserve(l, s.cfg.Now())
	if clients, ok := s.conns.HandleClients(req.Server.ID, handle); ok {
		setUp := make(map[clientRef]bool, len(clients))
		for _, c := range clients {
			setUp[clientRef{c.Server, c.CID}] = true
		}
		granted := s.logins.reserved(handle, seq, setUp, s.conns.ClientOpen, s.cfg.Now())
		if n := len(clients) + granted; n >= limit {
			s.capRefused.Add(1)
			return reject("handle %q has %d NATS connections and %d more logins granted, its limit", handle, len(clients), granted)
		}
	}
	if s.cfg.Leases == nil {
		return nil
	}
	// An unknown cid says whether Conns can follow the server's
	// connections to their close.
	if _, tracked := s.conns.ClientOpen(req.Server.ID, 0); !tracked {
		return nil
	}
	const what = "nats connection leases"
	for swept := false; ; swept = true {
		// No per-IP cap (0): logins behind one proxy or NAT do not queue
		// on their address's lock.
		id, open, _, ok, err := s.cfg.Leases.AcquireLease(ctx, LeaseKind, handle, ip, limit, 0)
		if err != nil {
			s.faults.Fail(what, err)
			return nil
		}
		s.faults.OK(what)
		if ok {
			s.mu.Lock()
			l.until = s.cfg.Now().Add(s.cfg.TTL + time.Second + leaseSlack)
			s.held[id] = l
			s.mu.Unlock()
			return nil
		}
		// A connection of handle closed here since the last sweep still
		// holds its lease: give such leases back and ask once more.
		if swept || s.sweep(ctx, handle) == 0 {
			s.capRefused.Add(1)
			return reject("handle %q has %d NATS connections in the deployment, its limit", handle, open)
		}
	}
}

// runSweep sweeps every sweepEvery until ctx ends.
func (s *Service) runSweep(ctx context.Context) {
	defer close(s.swept)
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.sweep(ctx, "")
		}
	}
}

// sweep gives back the leases of handle's logins (every handle's for "")
// whose connections are no longer open, and returns how many.
func (s *Service) sweep(ctx context.Context, handle string) int {
	now := s.cfg.Now()
	s.mu.Lock()
	var ids []int64
	for id, l := range s.held {
		if handle != "" && l.handle != handle {
			continue
		}
		// A server Conns no longer sees (it was shut down) has no open
		// connections either; past until, the server has closed it.
		if open, ok := s.conns.ClientOpen(l.server, l.cid); !open || !ok || now.After(l.until) {
			ids = append(ids, id)
			delete(s.held, id)
		}
	}
	s.mu.Unlock()
	s.release(ctx, ids)
	return len(ids)
}

// release gives back leases; one that cannot be deleted is no longer
// renewed, and expires by itself.
func (s *Service) release(ctx context.Context, ids []int64) {
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, leaseReleaseTimeout)
	defer cancel()
	if err := s.cfg.Leases.ReleaseLeases(ctx, ids); err != nil {
		s.faults.Fail("nats connection leases", err)
	}
}

// leaseReleaseTimeout bounds giving back leases (one statement).
const leaseReleaseTimeout = 5 * time.Second

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
		s.refusals.Log(s.log, s.cfg.Now(), "nats login refused", append(attrs, "reason", rj.reason)...)
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
