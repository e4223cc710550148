package httpapi

import (
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// register serves POST /v1/handles. The body carries its own proof of
// possession of the signing key, so there is no Authorization header.
func (s *Server) register(c echo.Context) error {
	body, err := readBody(c, maxRegisterBody)
	if err != nil {
		return err
	}
	r, err := chat.ParseRegister(body)
	if err != nil {
		return err
	}
	h, err := s.svc.Register(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, h)
}

// lookup serves GET /v1/handles/:handle, a handle's public keys; with
// ?at=<time>, the keys it had then (see docs/protocol.md).
func (s *Server) lookup(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	var h store.Handle
	if at := c.QueryParam("at"); at != "" {
		t, terr := lookupTime(at)
		if terr != nil {
			return terr
		}
		h, err = s.svc.LookupAt(c.Request().Context(), handle, t)
	} else {
		h, err = s.svc.Lookup(c.Request().Context(), handle)
	}
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, h)
}

// rotate serves POST /v1/handles/:handle/keys. The body carries both
// signatures (by the current key and by the new one), so there is no
// Authorization header; the current key's is authenticated as a header's
// would be, failed-authentication limit included.
func (s *Server) rotate(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	body, err := readBody(c, maxRegisterBody)
	if err != nil {
		return err
	}
	req, err := chat.ParseRotate(body)
	if err != nil {
		return err
	}
	r, err := chat.NewRotation(handle, req)
	if err != nil {
		return err
	}
	cur, err := s.authenticate(c, r.Creds, r.Msg)
	if err != nil {
		return err
	}
	h, err := s.svc.Rotate(c.Request().Context(), cur, r)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, h)
}

// deleteHandle serves DELETE /v1/handles/:handle, signed by the owner.
func (s *Server) deleteHandle(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	creds, err := headerCredentials(c.Request())
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	owner, err := s.authorizeOwner(c, creds, identity.DeleteHandleString(handle, creds.TS), handle)
	if err != nil {
		return err
	}
	d, err := s.svc.DeleteHandle(ctx, owner)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, d)
}

// lookupTime parses the at= value of a lookup: Unix seconds, or an RFC 3339
// time (a stored message's sent_at).
func lookupTime(v string) (time.Time, error) {
	if ts, err := identity.ParseTimestamp(v); err == nil {
		// Past the last second RFC 3339 can write (9999-12-31T23:59:59Z)
		// no key set starts; and time.Unix wraps around for the largest
		// values, naming a time before the handle existed.
		const last = 253402300799
		return time.Unix(min(ts, last), 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, chat.Errorf(protocol.CodeInvalidRequest, "at must be Unix seconds or an RFC 3339 time")
	}
	return t, nil
}
