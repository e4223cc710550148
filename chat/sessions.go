package chat

import (
	"context"
	"errors"
	"slices"
	"sync"

	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// The causes a session ends with when its key stops authenticating. They
// are what a long-poll answers, and what Follow returns: the key that
// opened the session would be refused now.
var (
	errKeyRevoked = &Error{Code: protocol.CodeBadSignature, Message: "the signing key that opened this session has been replaced"}
	errDeleted    = &Error{Code: protocol.CodeUnauthorized, Message: "the handle that opened this session has been deleted"}
)

// sessions are this instance's open streams and long-polls, by handle, each
// with the signing key that opened it, so that a rotation or deletion can
// end exactly those its old key opened.
type sessions struct {
	mu sync.Mutex
	m  map[string]map[*session]struct{}
}

type session struct {
	key    string
	cancel context.CancelCauseFunc
}

// openSession registers a session opened by owner's current signing key and
// returns its context, which ends (with errKeyRevoked or errDeleted as
// its cause) when that key is revoked; end unregisters it. A revocation that
// came between the caller's authentication and the registration is caught
// by checking the key once registered.
func (s *Service) openSession(ctx context.Context, owner store.Handle) (context.Context, func(), error) {
	ctx, cancel := context.WithCancelCause(ctx)
	ss := &session{key: owner.SigningKey, cancel: cancel}
	s.sessions.mu.Lock()
	if s.sessions.m == nil {
		s.sessions.m = make(map[string]map[*session]struct{})
	}
	byHandle := s.sessions.m[owner.Handle]
	if byHandle == nil {
		byHandle = make(map[*session]struct{})
		s.sessions.m[owner.Handle] = byHandle
	}
	byHandle[ss] = struct{}{}
	s.sessions.mu.Unlock()
	end := func() {
		cancel(nil)
		s.sessions.mu.Lock()
		// A handle's map is removed only once empty, so while ss is in it,
		// it is the handle's current map.
		m := s.sessions.m[owner.Handle]
		delete(m, ss)
		if len(m) == 0 {
			delete(s.sessions.m, owner.Handle)
		}
		s.sessions.mu.Unlock()
	}
	if err := s.checkKey(ctx, owner); err != nil {
		end()
		return nil, nil, err
	}
	return ctx, end, nil
}

// checkKey returns errKeyRevoked or errDeleted when owner's signing key no
// longer authenticates, as the store says. A store that cannot answer is no
// reason to end a session: the next check asks again.
func (s *Service) checkKey(ctx context.Context, owner store.Handle) error {
	h, err := s.store.Handle(ctx, owner.Handle)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errDeleted
	case err != nil:
		return nil
	case h.SigningKey != owner.SigningKey:
		return errKeyRevoked
	}
	return nil
}

// sessionEnd returns the error a session's operation reports once it has
// ended: its revocation cause, if it was revoked, else err.
func sessionEnd(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); cause == errKeyRevoked || cause == errDeleted {
		return cause
	}
	return err
}

// Revoked ends this instance's sessions of rev.Handle whose key no longer
// authenticates. The store decides, not rev: the cached handle is dropped
// and the store read again. Only when the store cannot answer are the keys
// rev names taken at their word. The broker calls it for every announced
// revocation, this instance's own included.
func (s *Service) Revoked(ctx context.Context, rev Revocation) {
	s.store.ForgetHandle(rev.Handle)
	var retired func(key string) bool
	var cause error = errKeyRevoked
	h, err := s.store.Handle(ctx, rev.Handle)
	switch {
	case errors.Is(err, store.ErrNotFound):
		retired, cause = func(string) bool { return true }, errDeleted
	case err != nil:
		s.log.Warn("revocation: store unavailable; ending the sessions of the keys announced", "handle", rev.Handle, "err", err)
		retired = func(key string) bool { return slices.Contains(rev.Keys, key) }
	default:
		retired = func(key string) bool { return key != h.SigningKey }
	}
	s.sessions.mu.Lock()
	var ended int
	for ss := range s.sessions.m[rev.Handle] {
		if retired(ss.key) {
			ss.cancel(cause)
			ended++
		}
	}
	s.sessions.mu.Unlock()
	if ended > 0 {
		s.log.Info("sessions ended: their key was revoked", "handle", rev.Handle, "sessions", ended)
	}
}

// Sessions returns how many streams and waiting long-polls handle has open
// on this instance.
func (s *Service) Sessions(handle string) int {
	s.sessions.mu.Lock()
	defer s.sessions.mu.Unlock()
	return len(s.sessions.m[handle])
}
