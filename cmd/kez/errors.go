package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"syscall"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/protocol"
)

// usageError marks a mistake in the command line: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// Exit codes: 2 for usage, 3 when the server cannot be reached, 1 otherwise.
func exitCode(err error) int {
	var u usageError
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.As(err, &u), errors.Is(err, flag.ErrHelp):
		return 2
	case errors.As(err, &ne), errors.As(err, &ue):
		return 3
	}
	return 1
}

// codeMessages say what each protocol error means for the person at the
// keyboard.
var codeMessages = map[protocol.Code]string{
	protocol.CodeInvalidRequest: "the server rejected the request as malformed",
	protocol.CodeInvalidHandle:  "not a valid handle: use 1 to 32 of a-z 0-9 _ -, starting with a letter or digit",
	protocol.CodeBadSignature:   "the server did not accept the signature: this key is not the one registered for the handle",
	protocol.CodeStaleTimestamp: "the server says this computer's clock is wrong; fix the system time and retry",
	protocol.CodeUnauthorized:   "the server does not know this handle; register it first with kez register",
	protocol.CodeForbidden:      "not allowed: a handle may only read its own inbox",
	protocol.CodeUnknownHandle:  "no such handle on the server",
	protocol.CodeHandleTaken:    "that handle is already registered",
	protocol.CodeKeyTaken:       "this key is already registered for another handle",
	protocol.CodeTooLarge:       "the message is too large",
	protocol.CodeRateLimited:    "the server is busy with too many requests or streams for this handle; try again later",
	protocol.CodeUnavailable:    "the server is temporarily unavailable; try again shortly",
	protocol.CodeInternal:       "the server failed with an internal error",
}

// describe turns an error into one line a person understands.
func describe(err error) string {
	if errors.Is(err, client.ErrKeyRevoked) {
		return "the server ended the stream: this key was replaced (kez rotate) or the handle deleted"
	}
	var re *client.ReconnectError
	if errors.As(err, &re) {
		return fmt.Sprintf("%s; retrying in %v", describe(re.Err), re.Delay.Round(100*time.Millisecond))
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		msg, ok := codeMessages[ce.Code]
		if !ok {
			msg = "the server refused: " + string(ce.Code)
		}
		if ce.Message != "" {
			return fmt.Sprintf("%s (%s)", msg, ce.Message)
		}
		return msg
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Sprintf("server unreachable at %s: %s", serverOf(ue.URL), cause(ue.Err))
	}
	if errors.Is(err, client.ErrStreamEnded) {
		return "the server ended the stream"
	}
	return err.Error()
}

// serverOf is the scheme and host of a request URL: where the server is,
// without the path and query (which may carry a stream's signature).
func serverOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "the configured address"
	}
	return u.Scheme + "://" + u.Host
}

// cause is the part of a transport error a person acts on: "connection
// refused" rather than the whole dial record.
func cause(err error) string {
	var errno syscall.Errno
	var dns *net.DNSError
	var ne net.Error
	switch {
	case errors.As(err, &dns):
		if dns.IsNotFound {
			return "no such host " + dns.Name
		}
		return "cannot resolve " + dns.Name
	case errors.As(err, &errno):
		return errno.Error()
	case errors.As(err, &ne) && ne.Timeout():
		return "timed out"
	}
	return err.Error()
}

// describeOpen says why a received message could not be read.
func describeOpen(err error) string {
	switch {
	case errors.Is(err, envelope.ErrUnknownSender):
		return "sender is not registered; message not shown"
	case errors.Is(err, envelope.ErrSenderKeyMismatch):
		return "not signed with the sender's registered key; message not shown"
	case errors.Is(err, envelope.ErrBadSignature):
		return "signature does not verify: the message was altered or forged; not shown"
	case errors.Is(err, envelope.ErrWrongRecipient):
		return "message was encrypted for someone else; not shown"
	case errors.Is(err, envelope.ErrDecrypt):
		return "message does not decrypt with this key; not shown"
	case errors.Is(err, envelope.ErrUnsupportedVersion):
		return "message uses a newer envelope format; upgrade kez to read it"
	case errors.Is(err, envelope.ErrMalformed):
		return "message is not a kez envelope; not shown"
	case errors.Is(err, client.ErrEnvelopeMismatch):
		return "the server relabelled this message (sender or id differ from the signed ones); not shown"
	}
	return describe(err)
}
