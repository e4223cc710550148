// Package chat is kezd's core: the one send path (validate, store with seq,
// publish) and the one read path (list since, then live) that the HTTP API and
// the NATS responder both call. It knows the protocol's rules and error codes
// but no transport.
package chat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/semaphore"
	"golang.org/x/time/rate"

	"github.com/kez-chat/kezd/faultlog"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
)

// Store is what the core needs from a backend.
type Store interface {
	CreateHandle(ctx context.Context, h store.Handle) (store.Handle, error)
	Handle(ctx context.Context, handle string) (store.Handle, error)
	AppendMessage(ctx context.Context, m store.NewMessage) (store.Appended, error)
	// ListMessagesUpTo lists up to limit messages after since, stopping
	// before the one that would take the envelopes past maxBytes (but
	// returning at least one); maxBytes <= 0 bounds nothing.
	ListMessagesUpTo(ctx context.Context, to string, since int64, limit, maxBytes int) ([]store.Message, error)
	LatestSeq(ctx context.Context, to string) (int64, error)

	RotateKeys(ctx context.Context, handle, current string, h store.Handle) (store.Handle, error)
	DeleteHandle(ctx context.Context, handle, current string) (time.Time, error)
	DeleteMessages(ctx context.Context, to string, through int64) (store.Deleted, error)
	HandleAt(ctx context.Context, handle string, at time.Time) (store.Handle, error)
	// ForgetHandle drops any cached copy of handle: it changed elsewhere.
	ForgetHandle(handle string)
	// The outbox (see package store).
	ConfirmPublished(ctx context.Context, keys []store.MessageKey) error
	SweepUnpublished(ctx context.Context, olderThan time.Duration, limit int, publish func([]store.Message) error) (int, error)

	// DeleteSentBefore deletes up to limit messages sent before `before`,
	// oldest first, keeping the inboxes' quota usage; it returns how many.
	DeleteSentBefore(ctx context.Context, before time.Time, limit int) (int64, error)
	// Sent returns the message from `from` with client id id that an
	// append would answer as a duplicate, without its envelope;
	// store.ErrNotFound if there is none.
	Sent(ctx context.Context, from, id string) (store.Message, error)
	// ForgetDeletedIDs forgets up to limit (sender, id) pairs of messages
	// deleted before `before`, oldest first; it returns how many.
	ForgetDeletedIDs(ctx context.Context, before time.Time, limit int) (int64, error)
}

// Publisher carries a stored message to live subscribers (the broker).
// Publish may only queue it; Flush returns once everything published
// before it has reached the server.
type Publisher interface {
	Publish(ctx context.Context, m store.Message) error
	Flush(ctx context.Context) error
}

// Limiter is the deployment's rate limits (*ratelimit.Limiter); nil or a
// nil *ratelimit.Limiter is limits off.
type Limiter interface {
	TakeAll(ctx context.Context, reqs ...ratelimit.Request) error
}

// Config holds the core's settings.
type Config struct {
	// Skew is how far a signed timestamp may be from now; 0 means DefaultSkew.
	Skew time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Recheck and RecheckEvery schedule a live stream's safety-net reads of
	// the store (see DefaultRecheck); 0 means the defaults, and then a
	// stream on a one-server broker (InterestImmediate) skips the read a
	// second after setup. Tests of the broker path set them long, so that
	// only the broker can deliver.
	Recheck      time.Duration
	RecheckEvery time.Duration
	// RepublishAfter is how long a stored message may stay unconfirmed
	// before any instance publishes it again (see outbox.go); 0 means
	// DefaultRepublishAfter.
	RepublishAfter time.Duration
	// Limits are the rate limits of sends (per sender, per sender and
	// recipient); nil admits every send.
	Limits Limiter

	// Quota bounds every inbox (messages, envelope bytes); a send beyond it
	// is 429 inbox_full. The zero Quota bounds nothing.
	Quota store.Quota
	// Retention is how long a message is kept; 0 keeps messages forever.
	// RunRetention deletes older ones every RetentionEvery (0 means
	// DefaultRetentionEvery).
	Retention      time.Duration
	RetentionEvery time.Duration
	// DedupWindow is how long after a message is deleted (delete-through,
	// retention) a retry of it is still answered as its duplicate; after
	// that the store forgets its (sender, id), in the retention passes.
	// 0 remembers them forever.
	DedupWindow time.Duration

	// Streams: see the stream memory constants in live.go. Zero values
	// take the defaults there.
	StreamPageBytes int           // envelope bytes one stream holds at a time
	CatchUpBudget   int64         // envelope bytes all streams' catch-up pages hold together
	CatchUpWait     time.Duration // how long a stream waits for the budget before it ends
	DrainTimeout    time.Duration // how long a stream may take to write one catch-up page
	// PollPageBytes bounds the envelope bytes of one poll answer (at least
	// one message is returned); 0 means DefaultPollPageBytes.
	PollPageBytes int
}

// DefaultSkew is the accepted clock difference of signed requests.
const DefaultSkew = 120 * time.Second

// Service is the send/read core. Create it with New.
type Service struct {
	store Store
	pub   Publisher
	live  Live
	log   *slog.Logger
	skew  time.Duration
	now   func() time.Time
	keys  *identity.Verifier // every signature check; remembers the keys it has seen

	recheck, recheckEvery time.Duration
	recheckSet            bool // Recheck was configured, not defaulted
	republishAfter        time.Duration
	limits                Limiter
	// retryLookups bounds the store lookups of sends refused by a rate
	// limit (is it a retry of a stored message?), so that a sender
	// flooding past its limit does not turn every refusal into a query.
	retryLookups *rate.Limiter

	faults      *faultlog.Log
	unconfirmed unconfirmed

	quota                     store.Quota
	retention, retentionEvery time.Duration
	dedupWindow               time.Duration

	pageBytes     int
	budget        *semaphore.Weighted
	catchUpWait   time.Duration
	drainTimeout  time.Duration
	pollPageBytes int

	publishFailures atomic.Int64
	streamsBusy     atomic.Int64 // streams ended waiting for the catch-up budget
	inboxFull       atomic.Int64 // sends refused by the quota

	sessions    sessions
	republished atomic.Int64
}

// New returns a Service. pub and live may be nil when there is no broker
// (then nothing is published and streams see only what they poll).
func New(cfg Config, st Store, pub Publisher, live Live, log *slog.Logger) *Service {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	s := &Service{store: st, pub: pub, live: live, log: log, skew: cfg.Skew, now: now,
		keys:    identity.NewVerifier(identity.DefaultVerifierKeys),
		recheck: cfg.Recheck, recheckEvery: cfg.RecheckEvery, republishAfter: cfg.RepublishAfter,
		limits: cfg.Limits, faults: faultlog.New(log, 0)}
	if s.republishAfter <= 0 {
		s.republishAfter = DefaultRepublishAfter
	}
	s.retryLookups = rate.NewLimiter(retryLookupsPerSecond, retryLookupsPerSecond)
	s.quota, s.retention, s.retentionEvery, s.dedupWindow = cfg.Quota, cfg.Retention, cfg.RetentionEvery, cfg.DedupWindow
	s.pageBytes, s.catchUpWait, s.drainTimeout, s.pollPageBytes = cfg.StreamPageBytes, cfg.CatchUpWait, cfg.DrainTimeout, cfg.PollPageBytes
	if s.pageBytes <= 0 {
		s.pageBytes = DefaultStreamPageBytes
	}
	// A page always has room for the largest message.
	s.pageBytes = max(s.pageBytes, protocol.MaxEnvelope)
	budget := cfg.CatchUpBudget
	if budget <= 0 {
		budget = DefaultCatchUpBudget
	}
	s.budget = semaphore.NewWeighted(max(budget, int64(s.pageBytes)))
	if s.catchUpWait <= 0 {
		s.catchUpWait = DefaultCatchUpWait
	}
	if s.drainTimeout <= 0 {
		s.drainTimeout = DefaultDrainTimeout
	}
	if s.pollPageBytes <= 0 {
		s.pollPageBytes = DefaultPollPageBytes
	}
	if s.retentionEvery <= 0 {
		s.retentionEvery = DefaultRetentionEvery
	}
	if s.skew <= 0 {
		s.skew = DefaultSkew
	}
	s.recheckSet = s.recheck > 0
	if s.recheck <= 0 {
		s.recheck = DefaultRecheck
	}
	if s.recheckEvery <= 0 {
		s.recheckEvery = DefaultRecheckEvery
	}
	return s
}

// PublishFailures counts messages stored but not published since start.
func (s *Service) PublishFailures() int64 { return s.publishFailures.Load() }

// InboxFullRefusals counts sends refused since start because the
// recipient's inbox held its quota.
func (s *Service) InboxFullRefusals() int64 { return s.inboxFull.Load() }

// StreamsBusy counts streams ended since start because the catch-up budget
// stayed taken for CatchUpWait.
func (s *Service) StreamsBusy() int64 { return s.streamsBusy.Load() }

// ParseRegister parses a registration body strictly (see DecodeObject).
// Every field is required; a missing one is invalid_request, whatever its
// zero value would say.
func ParseRegister(body []byte) (protocol.RegisterRequest, error) {
	var r protocol.RegisterRequest
	err := DecodeObject(body,
		Member{Name: "handle", Dst: &r.Handle, Required: true},
		Member{Name: "signing_key", Dst: &r.SigningKey, Required: true},
		Member{Name: "encryption_key", Dst: &r.EncryptionKey, Required: true},
		Member{Name: "ts", Dst: &r.TS, Required: true},
		Member{Name: "sig", Dst: &r.Sig, Required: true},
	)
	return r, err
}

// Register validates a registration, checks its proof of possession, and stores it.
func (s *Service) Register(ctx context.Context, r protocol.RegisterRequest) (store.Handle, error) {
	if err := identity.ValidateHandle(r.Handle); err != nil {
		return store.Handle{}, Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	if err := checkKeys(r.SigningKey, r.EncryptionKey); err != nil {
		return store.Handle{}, err
	}
	sig, err := identity.ParseSignature(r.Sig)
	if err != nil {
		return store.Handle{}, Errorf(protocol.CodeInvalidRequest, "sig: %v", err)
	}
	if err := identity.CheckSkew(s.now(), r.TS, s.skew); err != nil {
		return store.Handle{}, Errorf(protocol.CodeStaleTimestamp, "ts is more than %s from the server's clock", s.skew)
	}
	msg := identity.RegisterString(r.Handle, r.SigningKey, r.EncryptionKey, r.TS)
	if err := s.keys.Verify(r.SigningKey, msg, sig); err != nil {
		return store.Handle{}, Errorf(protocol.CodeBadSignature, "the signature does not verify with signing_key")
	}
	h, err := s.store.CreateHandle(ctx, store.Handle{Handle: r.Handle, SigningKey: r.SigningKey, EncryptionKey: r.EncryptionKey})
	if errors.Is(err, store.ErrKeyTaken) {
		// Both may be taken (a repeated registration); which constraint a
		// backend reports first is its own business, so the handle wins.
		if _, lerr := s.store.Handle(ctx, r.Handle); lerr == nil {
			err = store.ErrHandleTaken
		}
	}
	switch {
	case errors.Is(err, store.ErrHandleTaken):
		return store.Handle{}, Errorf(protocol.CodeHandleTaken, "handle %q is already registered", r.Handle)
	case errors.Is(err, store.ErrKeyTaken):
		return store.Handle{}, Errorf(protocol.CodeKeyTaken, "this signing key is, or was, registered to a handle")
	case err != nil:
		return store.Handle{}, s.storeError("register handle", err)
	}
	return h, nil
}

// Lookup returns a handle's public keys.
func (s *Service) Lookup(ctx context.Context, handle string) (store.Handle, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return store.Handle{}, Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	h, err := s.store.Handle(ctx, handle)
	if errors.Is(err, store.ErrNotFound) {
		return store.Handle{}, Errorf(protocol.CodeUnknownHandle, "no handle %q", handle)
	}
	if err != nil {
		return store.Handle{}, s.storeError("look up handle", err)
	}
	return h, nil
}

// Authenticate checks signed credentials over the canonical string msg and
// returns the signer. The caller builds msg from what the request says.
func (s *Service) Authenticate(ctx context.Context, c identity.Credentials, msg string) (store.Handle, error) {
	h, err := s.store.Handle(ctx, c.Handle)
	if errors.Is(err, store.ErrNotFound) {
		return store.Handle{}, Errorf(protocol.CodeUnauthorized, "signer %q is not registered", c.Handle)
	}
	if err != nil {
		return store.Handle{}, s.storeError("look up signer", err)
	}
	if err := identity.CheckSkew(s.now(), c.TS, s.skew); err != nil {
		return store.Handle{}, Errorf(protocol.CodeStaleTimestamp, "ts is more than %s from the server's clock", s.skew)
	}
	if err := s.keys.Verify(h.SigningKey, msg, c.Sig); err != nil {
		return store.Handle{}, Errorf(protocol.CodeBadSignature, "the signature does not verify")
	}
	return h, nil
}

// ParseSend parses and validates a send body. The envelope is kept as the JSON
// text that was sent, with only insignificant whitespace removed; when none
// was, it shares body's bytes, so body must not change while it is in use.
//
// A body of the common shape is read in one pass (scanSend), which also
// finds the envelope compact and within the depth limit; any other goes to
// the strict decoder, which says precisely what is wrong with it.
func ParseSend(body []byte) (protocol.SendRequest, error) {
	r, scanned := scanSend(body)
	if !scanned {
		var err error
		if r, err = decodeSend(body); err != nil {
			return protocol.SendRequest{}, err
		}
	}
	if err := checkSend(r, scanned); err != nil {
		return protocol.SendRequest{}, err
	}
	return r, nil
}

// decodeSend reads a send body with DecodeObject, envelope compacted.
func decodeSend(body []byte) (protocol.SendRequest, error) {
	var r protocol.SendRequest
	if err := DecodeObject(body,
		Member{Name: "to", Dst: &r.To, Required: true},
		Member{Name: "id", Dst: &r.ID},
		Member{Name: "envelope", Dst: &r.Envelope},
	); err != nil {
		return protocol.SendRequest{}, err
	}
	// Unmarshal has checked that the envelope is valid JSON, so one with no
	// whitespace byte at all is already compact: skip a second pass over it.
	if bytes.ContainsAny(r.Envelope, " \t\r\n") {
		var buf bytes.Buffer
		if err := json.Compact(&buf, r.Envelope); err != nil {
			return protocol.SendRequest{}, Errorf(protocol.CodeInvalidRequest, "envelope: %v", err)
		}
		r.Envelope = buf.Bytes()
	}
	return r, nil
}

// checkSend applies the rules of a send beyond JSON. scanned says the
// envelope's depth is known to be within the limit.
func checkSend(r protocol.SendRequest, scanned bool) error {
	if r.To == "" {
		return Errorf(protocol.CodeInvalidRequest, "to is required")
	}
	if err := identity.ValidateHandle(r.To); err != nil {
		return Errorf(protocol.CodeInvalidHandle, "to: %v", err)
	}
	if err := identity.ValidateClientID(r.ID); err != nil {
		return Errorf(protocol.CodeInvalidRequest, "%v", err)
	}
	if len(r.Envelope) == 0 || bytes.Equal(r.Envelope, []byte("null")) {
		return Errorf(protocol.CodeInvalidRequest, "envelope is required")
	}
	if !utf8.Valid(r.Envelope) {
		// JSON text is UTF-8 (RFC 8259); the stores keep text, not bytes.
		return Errorf(protocol.CodeInvalidRequest, "envelope is not valid UTF-8")
	}
	if len(r.Envelope) > protocol.MaxEnvelope {
		return Errorf(protocol.CodeTooLarge, "envelope is %d bytes of JSON; the limit is %d", len(r.Envelope), protocol.MaxEnvelope)
	}
	if !scanned {
		if d := jsonDepth(r.Envelope, protocol.MaxEnvelopeDepth); d > protocol.MaxEnvelopeDepth {
			return Errorf(protocol.CodeInvalidRequest, "envelope nests arrays and objects more than %d deep", protocol.MaxEnvelopeDepth)
		}
	}
	return nil
}

// Send stores a message from an authenticated sender and publishes it. body is
// the exact request body, and Send's from then on: the stored message may
// share its bytes, so the caller must not reuse it. A publish failure never
// fails the send: the message is durable, streams recover it from the store,
// and the outbox sweep publishes it again (see outbox.go). A retry of a message whose publish is
// unconfirmed publishes it too: its first instance may have died first.
func (s *Service) Send(ctx context.Context, from string, body []byte) (protocol.SendResult, error) {
	if len(body) > protocol.MaxSendBody {
		return protocol.SendResult{}, Errorf(protocol.CodeTooLarge, "request body is larger than %d bytes", protocol.MaxSendBody)
	}
	r, err := ParseSend(body)
	if err != nil {
		return protocol.SendResult{}, err
	}
	if err := s.takeSend(ctx, from, r); err != nil {
		// A retry of a message already stored is still its duplicate,
		// which stores nothing, when the sender is over a rate limit (as
		// many a second as retryLookups allows; past that, the 429). Its
		// publish, if still unconfirmed, is left to the outbox sweep.
		if AsError(err).Code == protocol.CodeRateLimited && s.retryLookups.Allow() {
			if m, serr := s.store.Sent(ctx, from, r.ID); serr == nil {
				return sendResult(m, true), nil
			}
		}
		return protocol.SendResult{}, err
	}
	// The stores honour ctx only until the append starts; once started it
	// completes whatever becomes of the caller, so an error always means
	// "nothing stored", and whatever is stored is published below.
	a, err := s.store.AppendMessage(ctx, store.NewMessage{From: from, To: r.To, ID: r.ID, Envelope: r.Envelope, Quota: s.quota})
	if errors.Is(err, store.ErrNotFound) {
		return protocol.SendResult{}, Errorf(protocol.CodeUnknownHandle, "no handle %q", r.To)
	}
	if errors.Is(err, store.ErrInboxFull) {
		s.inboxFull.Add(1)
		return protocol.SendResult{}, Errorf(protocol.CodeInboxFull, "%s's inbox is full; it takes messages again once some are deleted or expire", r.To)
	}
	if err != nil {
		return protocol.SendResult{}, s.storeError("append message", err)
	}
	s.faults.OK("store")
	m := a.Message
	if a.Pending {
		s.publish(context.WithoutCancel(ctx), m)
	}
	return sendResult(m, a.Duplicate), nil
}

// sendResult is the answer to a send of m.
func sendResult(m store.Message, duplicate bool) protocol.SendResult {
	return protocol.SendResult{Seq: m.Seq, To: m.To, ID: m.ID, SentAt: m.SentAt, Duplicate: duplicate}
}

// retryLookupsPerSecond is how many sends refused by a rate limit an
// instance looks up in the store a second, to answer a retry of a stored
// message as its duplicate: a client retrying its queue after a 429 is a
// handful; a flood is refused without a query.
const retryLookupsPerSecond = 50

// takeSend charges a send to its rate limits: one send of the sender, one
// message and its envelope's bytes of the (sender, recipient) pair. The
// sender's bucket is its handle's: a handle has one signing key at a time,
// and a rotated key does not get a fresh budget.
func (s *Service) takeSend(ctx context.Context, from string, r protocol.SendRequest) error {
	if s.limits == nil {
		return nil
	}
	pair := from + ">" + r.To
	err := s.limits.TakeAll(ctx,
		ratelimit.Request{Name: ratelimit.Sends, Key: from, N: 1},
		ratelimit.Request{Name: ratelimit.PairMessages, Key: pair, N: 1},
		ratelimit.Request{Name: ratelimit.PairBytes, Key: pair, N: float64(len(r.Envelope))})
	if err == nil {
		return nil
	}
	if e := AsError(err); e.Code == protocol.CodeRateLimited {
		return e
	}
	return s.storeError("rate limits", err)
}

// List returns up to limit messages for handle with seq > since, ascending,
// and fewer when their envelopes would pass PollPageBytes (but at least
// one). limit <= 0 means the default; larger than protocol.MaxPollLimit is clamped.
func (s *Service) List(ctx context.Context, handle string, since int64, limit int) ([]store.Message, error) {
	return s.list(ctx, handle, since, limit, s.pollPageBytes)
}

func (s *Service) list(ctx context.Context, handle string, since int64, limit, maxBytes int) ([]store.Message, error) {
	if limit <= 0 {
		limit = protocol.DefaultPollLimit
	}
	limit = min(limit, protocol.MaxPollLimit)
	ms, err := s.store.ListMessagesUpTo(ctx, handle, since, limit, maxBytes)
	if err != nil {
		return nil, s.storeError("list messages", err)
	}
	s.faults.OK("store")
	return ms, nil
}

// storeError turns a backend failure into the client-facing error: unavailable
// when the store said so (the client may retry), internal otherwise. An
// unavailable store is logged here, once and then in summaries (the
// transports log each such request at debug level only).
func (s *Service) storeError(op string, err error) error {
	cause := fmt.Errorf("%s: %w", op, err)
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded) {
		s.faults.Fail("store", cause)
		return &Error{Code: protocol.CodeUnavailable, Message: "the store is unavailable; retry later", Err: cause}
	}
	return &Error{Code: protocol.CodeInternal, Message: "internal error", Err: cause}
}
