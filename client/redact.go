package client

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"time"
)

// credentialParams are the query parameters that carry credentials: auth is
// a stream's signature, valid for the server's whole skew window.
var credentialParams = []string{"auth"}

// redacted replaces a credential wherever one would appear in an error.
const redacted = "REDACTED"

// redactURL returns raw with every credential (query values in
// credentialParams, a password in the user info) replaced by REDACTED. A
// value that does not parse as a URL is not shown at all.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	if u.RawQuery != "" {
		q := u.Query()
		changed := false
		for _, p := range credentialParams {
			if _, ok := q[p]; ok {
				q[p] = []string{redacted}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return u.String()
}

// redactTransport rewrites the *url.Error of a request that got no answer
// so that its URL carries no credential. Every request of the client goes
// through it, so no caller has to remember.
func redactTransport(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	return &url.Error{Op: ue.Op, URL: redactURL(ue.URL), Err: ue.Err}
}

// ErrStreamEnded reports that the server closed a stream; the client
// resumes it from its cursor.
var ErrStreamEnded = errors.New("the server ended the stream")

// ReconnectError is the error a Stream reports with StateReconnecting: why
// the connection ended or failed, and how long it waits before the next
// attempt.
type ReconnectError struct {
	Err   error
	Delay time.Duration
}

func (e *ReconnectError) Error() string {
	return fmt.Sprintf("%v; retrying in %v", e.Err, e.Delay)
}

func (e *ReconnectError) Unwrap() error { return e.Err }

// streamEnd names the end of a stream's body for a person: a clean or
// abrupt close by the server is ErrStreamEnded.
func streamEnd(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w (%w)", ErrStreamEnded, err)
	}
	return err
}
