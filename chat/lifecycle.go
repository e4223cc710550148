package chat

import (
	"context"
	"errors"
	"time"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/store"
)

// RotateRequest is the body of POST /v1/handles/<handle>/keys: the new keys,
// signed by the current signing key (Sig) and by the new one (NewSig).
type RotateRequest struct {
	SigningKey    string `json:"signing_key"`
	EncryptionKey string `json:"encryption_key"`
	TS            int64  `json:"ts"`
	Sig           string `json:"sig"`
	NewSig        string `json:"new_sig"`
}

// ParseRotate parses a rotation body; every field is required.
func ParseRotate(body []byte) (RotateRequest, error) {
	var raw struct {
		SigningKey    *string `json:"signing_key"`
		EncryptionKey *string `json:"encryption_key"`
		TS            *int64  `json:"ts"`
		Sig           *string `json:"sig"`
		NewSig        *string `json:"new_sig"`
	}
	if err := unmarshalObject(body, &raw); err != nil {
		return RotateRequest{}, err
	}
	for _, f := range []struct {
		name    string
		missing bool
	}{
		{"signing_key", raw.SigningKey == nil}, {"encryption_key", raw.EncryptionKey == nil},
		{"ts", raw.TS == nil}, {"sig", raw.Sig == nil}, {"new_sig", raw.NewSig == nil},
	} {
		if f.missing {
			return RotateRequest{}, Errorf(CodeInvalidRequest, "%s is required", f.name)
		}
	}
	return RotateRequest{SigningKey: *raw.SigningKey, EncryptionKey: *raw.EncryptionKey, TS: *raw.TS, Sig: *raw.Sig, NewSig: *raw.NewSig}, nil
}

// Revocation tells every instance that a handle's keys changed or that it
// was deleted. Keys are the signing keys it retired (none when only the
// encryption key changed). It is a hint: whoever receives it asks the
// store what is current.
type Revocation struct {
	Handle string   `json:"handle"`
	Keys   []string `json:"keys"`
}

// Rotate replaces handle's keys. Both signatures cover the canonical string
// with the new keys: sig by the current signing key, new_sig by the new one
// (the same key when only the encryption key changes). From then on the old
// signing key authenticates nothing, and the sessions it opened end, here
// and, through the broker, on every instance.
func (s *Service) Rotate(ctx context.Context, handle string, r RotateRequest) (store.Handle, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return store.Handle{}, Errorf(CodeInvalidHandle, "%v", err)
	}
	if err := checkKeys(r.SigningKey, r.EncryptionKey); err != nil {
		return store.Handle{}, err
	}
	sig, err := identity.ParseSignature(r.Sig)
	if err != nil {
		return store.Handle{}, Errorf(CodeInvalidRequest, "sig: %v", err)
	}
	newSig, err := identity.ParseSignature(r.NewSig)
	if err != nil {
		return store.Handle{}, Errorf(CodeInvalidRequest, "new_sig: %v", err)
	}
	msg := identity.RotateString(handle, r.SigningKey, r.EncryptionKey, r.TS)
	cur, err := s.Authenticate(ctx, identity.Credentials{Handle: handle, TS: r.TS, Sig: sig}, msg)
	if err != nil {
		return store.Handle{}, err
	}
	if err := identity.Verify(r.SigningKey, msg, newSig); err != nil {
		return store.Handle{}, Errorf(CodeBadSignature, "new_sig does not verify with the new signing_key")
	}
	h, err := s.store.RotateKeys(ctx, handle, cur.SigningKey, store.Handle{SigningKey: r.SigningKey, EncryptionKey: r.EncryptionKey})
	switch {
	case errors.Is(err, store.ErrKeyChanged):
		// Another rotation came first: sig is by a retired key.
		return store.Handle{}, Errorf(CodeBadSignature, "the signature does not verify")
	case errors.Is(err, store.ErrNotFound):
		return store.Handle{}, Errorf(CodeUnauthorized, "signer %q is not registered", handle)
	case errors.Is(err, store.ErrKeyTaken):
		return store.Handle{}, Errorf(CodeKeyTaken, "this signing key is, or was, registered")
	case err != nil:
		return store.Handle{}, s.storeError("rotate keys", err)
	}
	rev := Revocation{Handle: handle, Keys: []string{}}
	if cur.SigningKey != h.SigningKey {
		rev.Keys = append(rev.Keys, cur.SigningKey)
	}
	s.revoke(ctx, rev)
	return h, nil
}

// Deletion is the reply to DELETE /v1/handles/<handle>.
type Deletion struct {
	Handle    string    `json:"handle"`
	DeletedAt time.Time `json:"deleted_at"`
}

// DeleteHandle deletes owner, authenticated by the caller, with every
// message in its inbox; its sessions end everywhere.
func (s *Service) DeleteHandle(ctx context.Context, owner store.Handle) (Deletion, error) {
	at, err := s.store.DeleteHandle(ctx, owner.Handle, owner.SigningKey)
	switch {
	case errors.Is(err, store.ErrKeyChanged):
		return Deletion{}, Errorf(CodeBadSignature, "the signature does not verify")
	case errors.Is(err, store.ErrNotFound):
		return Deletion{}, Errorf(CodeUnauthorized, "signer %q is not registered", owner.Handle)
	case err != nil:
		return Deletion{}, s.storeError("delete handle", err)
	}
	s.revoke(ctx, Revocation{Handle: owner.Handle, Keys: []string{owner.SigningKey}})
	return Deletion{Handle: owner.Handle, DeletedAt: at}, nil
}

// DeleteResult is the reply to DELETE /v1/inbox/<handle>?through=<n>.
// Oldest is the seq of the oldest message kept, null when none is.
type DeleteResult struct {
	Deleted int64  `json:"deleted"`
	Oldest  *int64 `json:"oldest"`
}

// DeleteThrough deletes the messages of handle's inbox with seq <= through.
// The caller has authorized the owner.
func (s *Service) DeleteThrough(ctx context.Context, handle string, through int64) (DeleteResult, error) {
	d, err := s.store.DeleteMessages(ctx, handle, through)
	if err != nil {
		return DeleteResult{}, s.storeError("delete messages", err)
	}
	res := DeleteResult{Deleted: d.Count}
	if d.Oldest > 0 {
		res.Oldest = &d.Oldest
	}
	return res, nil
}

// LookupAt returns handle's public keys as they were at time at, so that a
// message sealed before a rotation can still be verified.
func (s *Service) LookupAt(ctx context.Context, handle string, at time.Time) (store.Handle, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return store.Handle{}, Errorf(CodeInvalidHandle, "%v", err)
	}
	h, err := s.store.HandleAt(ctx, handle, at)
	if errors.Is(err, store.ErrNotFound) {
		return store.Handle{}, Errorf(CodeUnknownHandle, "no handle %q at %s", handle, at.UTC().Format(time.RFC3339))
	}
	if err != nil {
		return store.Handle{}, s.storeError("look up handle", err)
	}
	return h, nil
}

// checkKeys validates the keys of a registration or a rotation, refusing
// weak ones (see identity.ParseSigningKey): the one place both go through.
func checkKeys(signingKey, encryptionKey string) error {
	if _, err := identity.ParseSigningKey(signingKey); err != nil {
		return Errorf(CodeInvalidRequest, "signing_key: %v", err)
	}
	if _, err := identity.ParseEncryptionKey(encryptionKey); err != nil {
		return Errorf(CodeInvalidRequest, "encryption_key: %v", err)
	}
	return nil
}

// announceTimeout bounds waiting for the broker to take an announcement.
const announceTimeout = 5 * time.Second

// revoke ends this instance's sessions that rev retires and tells the
// other instances. A failed announcement is logged, not returned: the change
// is committed, and every instance's sessions re-check their key against
// the store (see Follow), so they end at their next check anyway.
func (s *Service) revoke(ctx context.Context, rev Revocation) {
	s.Revoked(ctx, rev)
	if s.live == nil {
		return
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), announceTimeout)
	defer cancel()
	if err := s.live.AnnounceRevocation(actx, rev); err != nil {
		s.log.Warn("revocation not announced; other instances end its sessions at their next check",
			"handle", rev.Handle, "err", err)
	}
}
