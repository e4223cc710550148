package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// pathHandle returns the :handle path parameter once it is a valid handle,
// so nothing downstream ever sees a handle that is not one NATS token.
func pathHandle(c echo.Context) (string, error) {
	h := c.Param("handle")
	if err := identity.ValidateHandle(h); err != nil {
		return "", chat.Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	return h, nil
}

// headerCredentials parses the Authorization header: none is 401
// unauthorized, one that does not parse 400 invalid_request.
func headerCredentials(r *http.Request) (identity.Credentials, error) {
	v := r.Header.Get(echo.HeaderAuthorization)
	if v == "" {
		return identity.Credentials{}, chat.Errorf(protocol.CodeUnauthorized, `this request must be signed: Authorization: Kez <handle>:<ts>:<sig>`)
	}
	creds, err := identity.ParseAuthorization(v)
	if err != nil {
		return identity.Credentials{}, chat.Errorf(protocol.CodeInvalidRequest, "Authorization: %v", err)
	}
	return creds, nil
}

// authorizeOwner authenticates creds over the canonical string msg, then
// requires the signer to be owner: a valid signature by someone else is 403.
// Authentication comes first so that a stranger learns nothing about owner.
func (s *Server) authorizeOwner(c echo.Context, creds identity.Credentials, msg, owner string) (store.Handle, error) {
	h, err := s.authenticate(c, creds, msg)
	if err != nil {
		return store.Handle{}, err
	}
	if h.Handle != owner {
		return store.Handle{}, chat.Errorf(protocol.CodeForbidden, "%q may not read %q's inbox", h.Handle, owner)
	}
	return h, nil
}
