package chat

import (
	"errors"
	"fmt"
	"time"

	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
)

// Error is a failure the client should see, with its protocol code and a
// message a person can act on. Err, when set, is the cause, for logs only.
// Transports turn an *Error into their own response (an HTTP status and JSON
// body, a NATS reply) in exactly one place each.
type Error struct {
	Code    protocol.Code
	Message string
	Err     error
	// RetryAfter, on rate_limited, is when the client may try again
	// (HTTP's Retry-After, in whole seconds).
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

func (e *Error) Unwrap() error { return e.Err }

// Body returns e as the protocol's error object.
func (e *Error) Body() protocol.ErrorBody {
	return protocol.ErrorBody{Error: e.Code, Message: e.Message}
}

// Errorf returns an *Error with a formatted message.
func Errorf(code protocol.Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns err as an *Error; a rate limit's refusal is rate_limited,
// and anything else that is not one is internal, its text kept out of the
// client-facing message.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var r *ratelimit.Refused
	if errors.As(err, &r) {
		return &Error{Code: protocol.CodeRateLimited, Message: fmt.Sprintf("too many requests (%s); retry later", r.Limit), RetryAfter: r.RetryAfter}
	}
	return &Error{Code: protocol.CodeInternal, Message: "internal error", Err: err}
}

// RetryAfterSeconds is e's RetryAfter as HTTP's Retry-After wants it: whole
// seconds, rounded up, at least 1.
func (e *Error) RetryAfterSeconds() int64 {
	return max(1, int64((e.RetryAfter+time.Second-1)/time.Second))
}
