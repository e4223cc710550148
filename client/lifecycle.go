package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// ErrKeyRevoked reports a stream that the server ended because the key that
// opened it was replaced (a rotation) or its handle deleted: reconnecting
// with that key cannot succeed. It wraps the server's *Error.
var ErrKeyRevoked = errors.New("the stream's signing key was revoked")

// Rotate replaces cur's keys at the server with next's (the same handle):
// both sign the rotation. To change only the encryption key, give next
// cur's signing key. Keep cur's keys afterwards: messages already stored
// were sealed to cur's encryption key.
func (c *Client) Rotate(ctx context.Context, cur, next *envelope.Identity) (*Handle, error) {
	if cur.Handle != next.Handle {
		return nil, fmt.Errorf("rotate: the new keys are for %q, not %q", next.Handle, cur.Handle)
	}
	ts := c.now().Unix()
	sk, ek := next.SigningKeyHex(), next.EncryptionKeyHex()
	msg := identity.RotateString(cur.Handle, sk, ek, ts)
	body, err := json.Marshal(map[string]any{
		"signing_key":    sk,
		"encryption_key": ek,
		"ts":             ts,
		"sig":            identity.Sign(cur.Signing, msg),
		"new_sig":        identity.Sign(next.Signing, msg),
	})
	if err != nil {
		return nil, err
	}
	var h Handle
	if err := c.do(ctx, http.MethodPost, protocol.KeysPath(cur.Handle), nil, body, "", &h); err != nil {
		return nil, err
	}
	c.forget(cur.Handle)
	return &h, nil
}

// Deletion is the server's answer to an account deletion.
type Deletion = protocol.Deletion

// DeleteAccount deletes as's handle and every message in its inbox. The
// handle and its keys can never be registered again.
func (c *Client) DeleteAccount(ctx context.Context, as *envelope.Identity) (*Deletion, error) {
	ts := c.now().Unix()
	var d Deletion
	auth := authHeader(as, ts, identity.DeleteHandleString(as.Handle, ts))
	if err := c.do(ctx, http.MethodDelete, protocol.HandlePath(as.Handle), nil, nil, auth, &d); err != nil {
		return nil, err
	}
	c.forget(as.Handle)
	return &d, nil
}

// Deleted is the server's answer to DeleteThrough. Oldest is the seq of the
// oldest message kept, nil when the inbox is empty.
type Deleted = protocol.DeleteResult

// DeleteThrough deletes the messages of as's inbox with seq <= through.
// Other devices share the inbox: delete only what the user asked for.
func (c *Client) DeleteThrough(ctx context.Context, as *envelope.Identity, through int64) (*Deleted, error) {
	if through < 0 {
		return nil, errors.New("delete through: seq must not be negative")
	}
	ts := c.now().Unix()
	var d Deleted
	auth := authHeader(as, ts, identity.DeleteThroughString(as.Handle, through, ts))
	q := url.Values{"through": {strconv.FormatInt(through, 10)}}
	if err := c.do(ctx, http.MethodDelete, protocol.InboxPath(as.Handle), q, nil, auth, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// LookupAt returns the public keys handle had at time at (a message's
// sent_at), so that a message sealed before a rotation can be verified.
func (c *Client) LookupAt(ctx context.Context, handle string, at time.Time) (*Handle, error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return nil, &Error{Code: protocol.CodeInvalidHandle, Message: err.Error()}
	}
	var h Handle
	q := url.Values{"at": {at.UTC().Format(time.RFC3339Nano)}}
	if err := c.do(ctx, http.MethodGet, protocol.HandlePath(handle), q, nil, "", &h); err != nil {
		return nil, err
	}
	if h.Handle != handle {
		return nil, fmt.Errorf("lookup %q: server answered for %q", handle, h.Handle)
	}
	return &h, nil
}

// forget drops handle's cached keys: they changed.
func (c *Client) forget(handle string) {
	c.mu.Lock()
	delete(c.peers, handle)
	c.mu.Unlock()
}

// revoked reports whether err, the answer to reopening a stream that was
// open before, says its key no longer authenticates.
func revoked(err error) bool {
	return IsCode(err, protocol.CodeBadSignature) || IsCode(err, protocol.CodeUnauthorized)
}
