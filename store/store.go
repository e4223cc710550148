// Package store defines what kezd persists (handles and messages) and the
// errors every backend reports. The backends live in sub-packages:
// store/postgres for production and several instances, store/sqlite for a
// single machine with no external service. store/storetest holds the
// conformance suite that both must pass.
package store

import (
	"encoding/json"
	"errors"

	"github.com/kez-chat/kezd/protocol"
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
	// ErrInboxFull reports an append refused because the recipient's inbox
	// holds its quota of messages or of envelope bytes; nothing was stored.
	ErrInboxFull = errors.New("inbox full")
	// ErrUnavailable reports that the store could not take a write; nothing
	// was stored and the caller may retry.
	ErrUnavailable = errors.New("store unavailable")
)

// Handle is a registered identity: the protocol's handle record. Keys are
// lowercase hex, as on the wire.
type Handle = protocol.Handle

// NewMessage is a message to be appended; the store assigns Seq and SentAt.
type NewMessage struct {
	From     string
	To       string
	ID       string
	Envelope json.RawMessage // compact JSON text, stored and returned verbatim
	// Quota bounds the recipient's inbox with this message in it; the
	// zero Quota bounds nothing.
	Quota Quota
}

// Quota is the most an inbox may hold: messages, and bytes of envelope
// JSON text. Zero in either field means no limit on it. The store checks it
// in the append's own transaction, against a per-inbox count it keeps with
// every append and delete, so that concurrent sends (from any process
// sharing the store) never take an inbox past it.
type Quota struct {
	Messages int64
	Bytes    int64
}

// Message is a stored message, the protocol's stored message: what the
// stores return is what the transports send.
type Message = protocol.Message

// Appended is the result of an append. Duplicate is true when (From, ID) was
// already stored; Message is then the original, and nothing new was stored.
// An original since deleted (delete-through, retention) is still a
// duplicate for the store's dedup window after its deletion, while its
// recipient exists: Message then has its seq, addresses, ID and SentAt,
// and no Envelope.
//
// Pending is true when the message's publish is not known to have happened:
// always for a fresh message, and for a duplicate whose original is still in
// the outbox (the instance that stored it may have died before publishing).
// Whoever gets Pending publishes the message and then confirms it.
type Appended struct {
	Message   Message
	Duplicate bool
	Pending   bool
}

// Deleted is the result of deleting an inbox's messages through a seq.
// Oldest is the seq of the oldest message kept, 0 when none is.
type Deleted struct {
	Count  int64
	Oldest int64
}

// MessageKey names one stored message.
type MessageKey struct {
	To  string
	Seq int64
}

// The outbox.
//
// Every append also records its message in the store's outbox, in the same
// transaction: "stored, publish not confirmed". The instance that published
// it confirms it (ConfirmPublished) once its NATS connection has flushed the
// publish; entries left unconfirmed for longer than a bound (their publisher
// died, or froze) are claimed by SweepUnpublished on any instance, which
// publishes them again and confirms them. So every stored message is
// published at least once, whichever process dies when.
//
// SweepUnpublished(ctx, olderThan, limit, publish) claims up to limit
// entries stored more than olderThan ago, ordered by recipient then seq, and
// calls publish with their messages while holding a lease on them: no
// concurrent sweep, in this process or another sharing the store, is given
// the same entries until this one ends. When publish returns nil the
// entries are confirmed; when it fails they stay for a later sweep. It
// returns how many messages it passed to publish. An entry whose message no
// longer exists is confirmed without being published.
