package protocol

import (
	"encoding/json"
	"time"
)

// Handle is a registered handle's public record, the answer of registration
// and lookup. Keys are lowercase hex.
type Handle struct {
	Handle        string    `json:"handle"`
	SigningKey    string    `json:"signing_key"`
	EncryptionKey string    `json:"encryption_key"`
	CreatedAt     time.Time `json:"created_at"`
}

// RegisterRequest is the body of POST /v1/handles.
type RegisterRequest struct {
	Handle        string `json:"handle"`
	SigningKey    string `json:"signing_key"`
	EncryptionKey string `json:"encryption_key"`
	TS            int64  `json:"ts"`
	Sig           string `json:"sig"`
}

// SendRequest is the body of POST /v1/messages, and the data of a NATS send.
type SendRequest struct {
	To       string          `json:"to"`
	ID       string          `json:"id"`
	Envelope json.RawMessage `json:"envelope"`
}

// SendResult is the answer to a send. Duplicate is set when the server had
// already stored this (sender, id), for example from an earlier attempt
// whose answer was lost.
type SendResult struct {
	Seq       int64     `json:"seq"`
	To        string    `json:"to"`
	ID        string    `json:"id"`
	SentAt    time.Time `json:"sent_at"`
	Duplicate bool      `json:"duplicate,omitempty"`
}

// Message is a stored message: what a poll page, a stream's message event
// and a live NATS publish carry. Envelope is the JSON text as sent, with
// only insignificant whitespace removed.
type Message struct {
	Seq      int64           `json:"seq"`
	From     string          `json:"from"`
	To       string          `json:"to"`
	ID       string          `json:"id"`
	Envelope json.RawMessage `json:"envelope"`
	SentAt   time.Time       `json:"sent_at"`
}

// Page is the answer of a poll. Next is the seq of the last message
// returned, or the request's since when there is none.
type Page struct {
	Messages []Message `json:"messages"`
	Next     int64     `json:"next"`
	// Reset is set when messages after since were deleted (v1.1): its
	// Oldest is the first message returned, as a stream's reset says.
	Reset *Reset `json:"reset,omitempty"`
}

// Ready is the data of a stream's ready event: the backlog has been sent,
// and Latest is the inbox's latest seq.
type Ready struct {
	Latest int64 `json:"latest"`
}

// Reset is the data of a stream's reset event: messages before Oldest were
// deleted, and the stream continues from there.
type Reset struct {
	Oldest int64 `json:"oldest"`
}

// RotateRequest is the body of POST /v1/handles/<handle>/keys: the new keys,
// signed by the current signing key (Sig) and by the new one (NewSig).
type RotateRequest struct {
	SigningKey    string `json:"signing_key"`
	EncryptionKey string `json:"encryption_key"`
	TS            int64  `json:"ts"`
	Sig           string `json:"sig"`
	NewSig        string `json:"new_sig"`
}

// Deletion is the answer to DELETE /v1/handles/<handle>.
type Deletion struct {
	Handle    string    `json:"handle"`
	DeletedAt time.Time `json:"deleted_at"`
}

// DeleteResult is the answer to DELETE /v1/inbox/<handle>?through=<n>.
// Oldest is the seq of the oldest message kept, null when none is.
type DeleteResult struct {
	Deleted int64  `json:"deleted"`
	Oldest  *int64 `json:"oldest"`
}
