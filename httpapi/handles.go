package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
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

// lookup serves GET /v1/handles/:handle, a handle's public keys.
func (s *Server) lookup(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	h, err := s.svc.Lookup(c.Request().Context(), handle)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, h)
}
