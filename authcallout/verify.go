package authcallout

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// rejection is a refused login: reason is what the server log and ours say.
type rejection struct {
	reason string
	err    error // a failure of ours (the store), not of the client
}

func (r *rejection) Error() string {
	if r.err != nil {
		return r.reason + ": " + r.err.Error()
	}
	return r.reason
}

func reject(format string, args ...any) error {
	return &rejection{reason: fmt.Sprintf(format, args...)}
}

// authorize decides a login: it returns the handle the connecting client
// proved to be, or a *rejection. The checks are the ones in PROTOCOL.md's
// "Login for native NATS clients": the nkey is a registered signing key, any
// name given is that key's handle, and the signature over the nonce verifies.
func authorize(ctx context.Context, lookup HandleLookup, req *jwt.AuthorizationRequestClaims) (string, error) {
	if kind := req.ClientInformation.Kind; kind != "Client" {
		return "", reject("connection kind %q is not a client", kind)
	}
	co := req.ConnectOptions
	if co.Nkey == "" {
		return "", reject("no nkey presented")
	}
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(co.Nkey))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return "", reject("nkey is not a user public key")
	}
	// A small-order key would let one constant signature verify for every
	// nonce; a non-canonical one is never what a handle registered.
	if err := identity.CheckSigningKey(raw); err != nil {
		return "", reject("nkey %s: %v", co.Nkey, err)
	}
	nonce := req.ClientInformation.Nonce
	if nonce == "" {
		return "", reject("no nonce in the request; the server must always send one")
	}
	if co.SignedNonce == "" {
		return "", reject("no signature over the nonce")
	}
	sig, err := decodeSig(co.SignedNonce)
	if err != nil {
		return "", reject("signature is not base64")
	}
	// Verify before touching the store, so garbage costs no query.
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(ed25519.PublicKey(raw), []byte(nonce), sig) {
		return "", reject("signature over the nonce does not verify with nkey %s", co.Nkey)
	}
	h, err := lookup.HandleByKey(ctx, hex.EncodeToString(raw))
	if errors.Is(err, store.ErrNotFound) {
		return "", reject("nkey %s is not the signing key of any handle", co.Nkey)
	}
	if err != nil {
		return "", &rejection{reason: "handle lookup failed", err: err}
	}
	// The store validated it on the way in; it becomes part of subjects, so
	// check again rather than trust.
	if err := identity.ValidateHandle(h.Handle); err != nil {
		return "", &rejection{reason: "stored handle is invalid", err: err}
	}
	// The nats CLI sends --user as a token when it also sends an nkey.
	if co.Username != "" && co.Username != h.Handle {
		return "", reject("user %q does not match the key's handle %q", co.Username, h.Handle)
	}
	if co.Token != "" && co.Token != h.Handle {
		return "", reject("token does not match the key's handle %q", h.Handle)
	}
	return h.Handle, nil
}

// decodeSig accepts the encodings nats-server itself accepts for a signed
// nonce: unpadded base64url (what nats.go sends) and standard base64.
func decodeSig(s string) ([]byte, error) {
	if b, err := base64.RawURLEncoding.DecodeString(s); err == nil {
		return b, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

// Permissions returns handle's NATS permissions, protocol.HandlePermissions,
// as the user claims the callout grants: the same definition the send
// responder's reply check derives from.
func Permissions(handle string) jwt.Permissions {
	p := protocol.HandlePermissions(handle)
	return jwt.Permissions{
		Pub: jwt.Permission{Allow: p.PubAllow, Deny: p.PubDeny},
		Sub: jwt.Permission{Allow: p.SubAllow},
	}
}
