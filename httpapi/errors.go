package httpapi

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

// Codes for router errors, which PROTOCOL.md's list does not cover.
const (
	codeNotFound         protocol.Code = "not_found"
	codeMethodNotAllowed protocol.Code = "method_not_allowed"
)

// statusOf maps a protocol error code to its HTTP status.
var statusOf = map[protocol.Code]int{
	protocol.CodeInvalidRequest: http.StatusBadRequest,
	protocol.CodeInvalidHandle:  http.StatusBadRequest,
	protocol.CodeBadSignature:   http.StatusUnauthorized,
	protocol.CodeStaleTimestamp: http.StatusUnauthorized,
	protocol.CodeUnauthorized:   http.StatusUnauthorized,
	protocol.CodeForbidden:      http.StatusForbidden,
	protocol.CodeUnknownHandle:  http.StatusNotFound,
	protocol.CodeHandleTaken:    http.StatusConflict,
	protocol.CodeKeyTaken:       http.StatusConflict,
	protocol.CodeTooLarge:       http.StatusRequestEntityTooLarge,
	protocol.CodeRateLimited:    http.StatusTooManyRequests,
	protocol.CodeInboxFull:      http.StatusTooManyRequests,
	protocol.CodeUnavailable:    http.StatusServiceUnavailable,
	protocol.CodeInternal:       http.StatusInternalServerError,
	codeNotFound:                http.StatusNotFound,
	codeMethodNotAllowed:        http.StatusMethodNotAllowed,
}

// handleError is the one place that turns an error into an HTTP response:
// a *chat.Error by its code, an *echo.HTTPError (no route, wrong method) in
// the same JSON shape, anything else as 500 internal with the cause logged
// and not sent.
func (s *Server) handleError(err error, c echo.Context) {
	req := c.Request()
	if req.Context().Err() != nil && errors.Is(err, context.Canceled) {
		return // the client went away; there is no one to answer
	}
	e := s.toChatError(err)
	status, ok := statusOf[e.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	switch {
	case status == http.StatusServiceUnavailable:
		// A dependency is down: the core logs it once and then in
		// summaries; one line per refused request would flood the log.
		s.log.Debug("request refused", "method", req.Method, "path", req.URL.Path,
			"status", status, "code", string(e.Code), "err", err)
	case status >= 500:
		s.log.Error("request failed", "method", req.Method, "path", req.URL.Path,
			"status", status, "code", string(e.Code), "err", err)
	}
	if c.Response().Committed {
		// A stream that already started has no way to report an error but
		// to end; the client reconnects.
		if status < 500 {
			s.log.Debug("error after response started", "path", req.URL.Path, "err", err)
		}
		return
	}
	if status == http.StatusTooManyRequests {
		c.Response().Header().Set("Retry-After", strconv.FormatInt(e.RetryAfterSeconds(), 10))
	}
	if err := writeJSON(c, status, e.Body()); err != nil {
		s.log.Debug("write error response", "path", req.URL.Path, "err", err)
	}
}

func (s *Server) toChatError(err error) *chat.Error {
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return &chat.Error{Code: codeNotFound, Message: "no such endpoint"}
		case http.StatusMethodNotAllowed:
			return &chat.Error{Code: codeMethodNotAllowed, Message: "method not allowed on this endpoint"}
		case http.StatusRequestEntityTooLarge:
			return &chat.Error{Code: protocol.CodeTooLarge, Message: "request body too large"}
		case http.StatusTooManyRequests:
			return &chat.Error{Code: protocol.CodeRateLimited, Message: "too many requests"}
		case http.StatusServiceUnavailable:
			return &chat.Error{Code: protocol.CodeUnavailable, Message: "service unavailable"}
		}
		if he.Code >= 400 && he.Code < 500 {
			return &chat.Error{Code: protocol.CodeInvalidRequest, Message: http.StatusText(he.Code)}
		}
		return &chat.Error{Code: protocol.CodeInternal, Message: "internal error", Err: err}
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return &chat.Error{Code: protocol.CodeTooLarge, Message: "request body is larger than the limit"}
	}
	return chat.AsError(err)
}

// writeJSON writes v as the JSON response without HTML escaping, so that
// envelopes holding <, > or & come back exactly as they were sent.
func writeJSON(c echo.Context, status int, v any) error {
	return writeJSONType(c, status, echo.MIMEApplicationJSON, v)
}

func writeJSONType(c echo.Context, status int, contentType string, v any) error {
	b, err := protocol.Marshal(v)
	if err != nil {
		return err
	}
	return c.Blob(status, contentType, b)
}
