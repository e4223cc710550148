package chat

import (
	"context"
	"errors"
	"time"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// ParseRotate parses a rotation body strictly (see DecodeObject); every
// field is required.
func ParseRotate(body []byte) (protocol.RotateRequest, error) {
	var r protocol.RotateRequest
	err := DecodeObject(body,
		Member{Name: "signing_key", Dst: &r.SigningKey, Required: true},
		Member{Name: "encryption_key", Dst: &r.EncryptionKey, Required: true},
		Member{Name: "ts", Dst: &r.TS, Required: true},
		Member{Name: "sig", Dst: &r.Sig, Required: true},
		Member{Name: "new_sig", Dst: &r.NewSig, Required: true},
	)
	return r, err
}

// Revocation tells every instance that a handle's keys changed or that it
// was deleted. Keys are the signing keys it retired (none when only the
// encryption key changed). It is a hint: whoever receives it asks the
// store what is current.
type Revocation struct {
	Handle string   `json:"handle"`
	Keys   []string `json:"keys"`
}

// Rotation is a rotation of Handle's keys, checked by NewRotation. Its
// current signing key signed Msg; the caller authenticates Creds over Msg,
// as it does every signed request (and with the same limits on failures),
// and hands the signer to Rotate.
type Rotation struct {
	Handle string
	Creds  identity.Credentials
	Msg    string

	keys   store.Handle // the new ones
	newSig []byte
}

// NewRotation checks a rotation of handle's keys to r's and builds the
// canonical string both signatures cover: sig by the current signing key,
// new_sig by the new one (the same key when only the encryption key
// changes).
func NewRotation(handle string, r protocol.RotateRequest) (Rotation, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return Rotation{}, Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	if err := checkKeys(r.SigningKey, r.EncryptionKey); err != nil {
		return Rotation{}, err
	}
	sig, err := identity.ParseSignature(r.Sig)
	if err != nil {
		return Rotation{}, Errorf(protocol.CodeInvalidRequest, "sig: %v", err)
	}
	newSig, err := identity.ParseSignature(r.NewSig)
	if err != nil {
		return Rotation{}, Errorf(protocol.CodeInvalidRequest, "new_sig: %v", err)
	}
	return Rotation{
		Handle: handle,
		Creds:  identity.Credentials{Handle: handle, TS: r.TS, Sig: sig},
		Msg:    identity.RotateString(handle, r.SigningKey, r.EncryptionKey, r.TS),
		keys:   store.Handle{SigningKey: r.SigningKey, EncryptionKey: r.EncryptionKey},
		newSig: newSig,
	}, nil
}

// Rotate replaces the keys of cur, the signer of r.Creds as Authenticate
// returned it. From then on the old signing key authenticates nothing, and
// the sessions it opened end, here and, through the broker, on every
// instance.
func (s *Service) Rotate(ctx context.Context, cur store.Handle, r Rotation) (store.Handle, error) {
	handle := r.Handle
	if err := identity.Verify(r.keys.SigningKey, r.Msg, r.newSig); err != nil {
		return store.Handle{}, Errorf(protocol.CodeBadSignature, "new_sig does not verify with the new signing_key")
	}
	h, err := s.store.RotateKeys(ctx, handle, cur.SigningKey, r.keys)
	switch {
	case errors.Is(err, store.ErrKeyChanged):
		// Another rotation came first: sig is by a retired key.
		return store.Handle{}, Errorf(protocol.CodeBadSignature, "the signature does not verify")
	case errors.Is(err, store.ErrNotFound):
		return store.Handle{}, Errorf(protocol.CodeUnauthorized, "signer %q is not registered", handle)
	case errors.Is(err, store.ErrKeyTaken):
		return store.Handle{}, Errorf(protocol.CodeKeyTaken, "this signing key is, or was, registered")
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

// DeleteHandle deletes owner, authenticated by the caller, with every
// message in its inbox; its sessions end everywhere.
func (s *Service) DeleteHandle(ctx context.Context, owner store.Handle) (protocol.Deletion, error) {
	at, err := s.store.DeleteHandle(ctx, owner.Handle, owner.SigningKey)
	switch {
	case errors.Is(err, store.ErrKeyChanged):
		return protocol.Deletion{}, Errorf(protocol.CodeBadSignature, "the signature does not verify")
	case errors.Is(err, store.ErrNotFound):
		return protocol.Deletion{}, Errorf(protocol.CodeUnauthorized, "signer %q is not registered", owner.Handle)
	case err != nil:
		return protocol.Deletion{}, s.storeError("delete handle", err)
	}
	s.revoke(ctx, Revocation{Handle: owner.Handle, Keys: []string{owner.SigningKey}})
	return protocol.Deletion{Handle: owner.Handle, DeletedAt: at}, nil
}

// DeleteThrough deletes the messages of handle's inbox with seq <= through.
// The caller has authorized the owner.
func (s *Service) DeleteThrough(ctx context.Context, handle string, through int64) (protocol.DeleteResult, error) {
	d, err := s.store.DeleteMessages(ctx, handle, through)
	if err != nil {
		return protocol.DeleteResult{}, s.storeError("delete messages", err)
	}
	res := protocol.DeleteResult{Deleted: d.Count}
	if d.Oldest > 0 {
		res.Oldest = &d.Oldest
	}
	return res, nil
}

// LookupAt returns handle's public keys as they were at time at, so that a
// message sealed before a rotation can still be verified.
func (s *Service) LookupAt(ctx context.Context, handle string, at time.Time) (store.Handle, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return store.Handle{}, Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	h, err := s.store.HandleAt(ctx, handle, at)
	if errors.Is(err, store.ErrNotFound) {
		return store.Handle{}, Errorf(protocol.CodeUnknownHandle, "no handle %q at %s", handle, at.UTC().Format(time.RFC3339))
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
		return Errorf(protocol.CodeInvalidRequest, "signing_key: %v", err)
	}
	if _, err := identity.ParseEncryptionKey(encryptionKey); err != nil {
		return Errorf(protocol.CodeInvalidRequest, "encryption_key: %v", err)
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
