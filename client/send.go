package client

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// Sent is the server's answer to a send. Duplicate is true when the server
// had already stored this id, for example from an earlier attempt whose
// answer was lost.
type Sent = protocol.SendResult

// NewID returns a fresh client message id: 26 random base32 characters.
func NewID() string { return rand.Text() }

// Seal looks up to's keys and seals text from from into an envelope for the
// message id.
func (c *Client) Seal(ctx context.Context, from *envelope.Identity, to, id string, text []byte) ([]byte, error) {
	p, err := c.peer(ctx, to)
	if err != nil {
		return nil, err
	}
	return envelope.Seal(from, p, id, c.now().Unix(), text)
}

// Send encrypts text to to and sends it from from, under a fresh id.
func (c *Client) Send(ctx context.Context, from *envelope.Identity, to string, text []byte) (*Sent, error) {
	id := NewID()
	env, err := c.Seal(ctx, from, to, id, text)
	if err != nil {
		return nil, err
	}
	return c.SendEnvelope(ctx, from, to, id, env)
}

// SendEnvelope sends an already sealed envelope (any JSON value) under id.
// On a network failure, 502/503/504 or 429 it retries with the same id and
// body, so the server stores the message at most once; a retry the server had
// already stored answers with Duplicate set.
func (c *Client) SendEnvelope(ctx context.Context, from *envelope.Identity, to, id string, env json.RawMessage) (*Sent, error) {
	if err := identity.ValidateClientID(id); err != nil {
		return nil, &Error{Code: protocol.CodeInvalidRequest, Message: err.Error()}
	}
	body, err := sendBody(to, id, env)
	if err != nil {
		return nil, err
	}
	hash := identity.BodySHA256(body)
	var lastErr error
	for attempt := range c.attempts {
		if attempt > 0 {
			if err := sleep(ctx, c.backoff.delay(attempt-1)); err != nil {
				return nil, lastErr
			}
		}
		ts := c.now().Unix() // a fresh timestamp each try, so a slow retry is never stale
		var s Sent
		lastErr = c.do(ctx, http.MethodPost, protocol.PathMessages, nil, body, authHeader(from, ts, identity.SendString(hash, ts)), &s)
		if lastErr == nil {
			return &s, nil
		}
		if !retryable(lastErr) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

func sendBody(to, id string, env json.RawMessage) ([]byte, error) {
	if !json.Valid(env) {
		return nil, &Error{Code: protocol.CodeInvalidRequest, Message: "envelope is not valid JSON"}
	}
	// Built by hand so the envelope's bytes go out exactly as given: the
	// encoder would re-escape them.
	to2, err := json.Marshal(to)
	if err != nil {
		return nil, err
	}
	id2, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, `{"to":%s,"id":%s,"envelope":%s}`, to2, id2, env), nil
}
