package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kez-chat/kezd/protocol"
)

// Code is a PROTOCOL.md error code; the server's own vocabulary.
type Code = protocol.Code

// The protocol's error codes.
const (
	CodeInvalidRequest = protocol.CodeInvalidRequest
	CodeInvalidHandle  = protocol.CodeInvalidHandle
	CodeBadSignature   = protocol.CodeBadSignature
	CodeStaleTimestamp = protocol.CodeStaleTimestamp
	CodeUnauthorized   = protocol.CodeUnauthorized
	CodeForbidden      = protocol.CodeForbidden
	CodeUnknownHandle  = protocol.CodeUnknownHandle
	CodeHandleTaken    = protocol.CodeHandleTaken
	CodeKeyTaken       = protocol.CodeKeyTaken
	CodeTooLarge       = protocol.CodeTooLarge
	CodeRateLimited    = protocol.CodeRateLimited
	CodeInboxFull      = protocol.CodeInboxFull
	CodeUnavailable    = protocol.CodeUnavailable
	CodeInternal       = protocol.CodeInternal
)

// Error is a failure the server reported, with its protocol code. Status is
// the HTTP status, or 0 when the answer came over NATS.
type Error struct {
	Status  int
	Code    protocol.Code
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code protocol.Code) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// ErrEnvelopeMismatch reports an envelope whose signed sender, recipient or id
// differs from the stored message the server delivered it in: the server (or
// someone in between) relabelled it.
var ErrEnvelopeMismatch = errors.New("envelope does not match the message it was delivered in")

// readError turns a non-2xx answer into an *Error. A body that is not the
// protocol's error object (a proxy's page, say) still yields a code from the
// status, so callers can always switch on Code.
func readError(resp *http.Response) error {
	e := &Error{Status: resp.StatusCode}
	var body protocol.ErrorBody
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(raw, &body) == nil && body.Error != "" {
		e.Code, e.Message = body.Error, body.Message
		return e
	}
	e.Code = codeForStatus(resp.StatusCode)
	e.Message = http.StatusText(resp.StatusCode)
	return e
}

func codeForStatus(status int) protocol.Code {
	switch status {
	case http.StatusBadRequest:
		return protocol.CodeInvalidRequest
	case http.StatusUnauthorized:
		return protocol.CodeUnauthorized
	case http.StatusForbidden:
		return protocol.CodeForbidden
	case http.StatusNotFound:
		return protocol.CodeUnknownHandle
	case http.StatusConflict:
		return protocol.CodeHandleTaken
	case http.StatusRequestEntityTooLarge:
		return protocol.CodeTooLarge
	case http.StatusTooManyRequests:
		return protocol.CodeRateLimited
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return protocol.CodeUnavailable
	}
	return protocol.CodeInternal
}
