package protocol

// Code is an error code: the "error" member of an error body.
type Code string

// The error codes.
const (
	CodeInvalidRequest Code = "invalid_request"
	CodeInvalidHandle  Code = "invalid_handle"
	CodeBadSignature   Code = "bad_signature"
	CodeStaleTimestamp Code = "stale_timestamp"
	CodeUnauthorized   Code = "unauthorized"
	CodeForbidden      Code = "forbidden"
	CodeUnknownHandle  Code = "unknown_handle"
	CodeHandleTaken    Code = "handle_taken"
	CodeKeyTaken       Code = "key_taken"
	CodeTooLarge       Code = "too_large"
	CodeRateLimited    Code = "rate_limited"
	CodeInboxFull      Code = "inbox_full"
	CodeUnavailable    Code = "unavailable"
	CodeInternal       Code = "internal"
)

// ErrorBody is the error object, {"error":code,"message":text}, the same in
// an HTTP response and a NATS reply.
type ErrorBody struct {
	Error   Code   `json:"error"`
	Message string `json:"message"`
}
