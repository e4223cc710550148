package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// send serves POST /v1/messages. The signature covers the SHA-256 of the
// exact bytes received, which are also what the core parses, whatever the
// Content-Type says. The sender is authenticated before the body is parsed,
// so a stranger learns nothing about recipients.
func (s *Server) send(c echo.Context) error {
	creds, err := headerCredentials(c.Request())
	if err != nil {
		return err
	}
	body, err := readBody(c, protocol.MaxSendBody)
	if err != nil {
		return err
	}
	from, err := s.authenticate(c, creds, identity.SendString(identity.BodySHA256(body), creds.TS))
	if err != nil {
		return err
	}
	res, err := s.svc.Send(c.Request().Context(), from.Handle, body)
	if err != nil {
		return err
	}
	status := http.StatusCreated
	if res.Duplicate {
		status = http.StatusOK
	}
	// What writeJSON would write, without reflection: every send ends here.
	return c.Blob(status, echo.MIMEApplicationJSON, protocol.AppendSendResult(make([]byte, 0, 128), res))
}
