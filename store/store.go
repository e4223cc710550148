// Package store defines what kezd persists (handles and messages) and the
// errors every backend reports. The backends live in sub-packages:
// store/postgres for production and several instances, store/sqlite for a
// single machine with no external service. store/storetest holds the
// conformance suite that both must pass.
package store

import (
	"encoding/json"
	"errors"
	"time"
)

// Errors every backend translates its own errors into, so nothing above the
// store imports a database driver.
var (
	// ErrNotFound reports an unknown handle (for a lookup, or as recipient).
	ErrNotFound = errors.New("not found")
	// ErrHandleTaken reports a registration for a handle that exists.
	ErrHandleTaken = errors.New("handle taken")
	// ErrKeyTaken reports a registration with a signing key another handle uses.
	ErrKeyTaken = errors.New("signing key taken")
	// ErrKeyChanged reports a key change or deletion asked for with a
	// signing key that is no longer the handle's: another change came first.
	ErrKeyChanged = errors.New("signing key changed")
	// ErrUnavailable reports that the store could not take a write; nothing
	// was stored and the caller may retry.
	ErrUnavailable = errors.New("store unavailable")
)

// Handle is a registered identity. Keys are lowercase hex, as on the wire.
type Handle struct {
	Handle        string    `json:"handle"`
	SigningKey    string    `json:"signing_key"`
	EncryptionKey string    `json:"encryption_key"`
	CreatedAt     time.Time `json:"created_at"`
}

// NewMessage is a message to be appended; the store assigns Seq and SentAt.
type NewMessage struct {
	From     string
	To       string
	ID       string
	Envelope json.RawMessage // compact JSON text, stored and returned verbatim
}

// Message is a stored message. Its JSON form is PROTOCOL.md's stored message.
type Message struct {
	Seq      int64           `json:"seq"`
	From     string          `json:"from"`
	To       string          `json:"to"`
	ID       string          `json:"id"`
	Envelope json.RawMessage `json:"envelope"`
	SentAt   time.Time       `json:"sent_at"`
}

// Appended is the result of an append. Duplicate is true when (From, ID) was
// already stored; Message is then the original, and nothing new was stored.
type Appended struct {
	Message   Message
	Duplicate bool
}

// Deleted is the result of deleting an inbox's messages through a seq.
// Oldest is the seq of the oldest message kept, 0 when none is.
type Deleted struct {
	Count  int64
	Oldest int64
}
