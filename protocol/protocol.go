// Package protocol holds the words of kez-chat's wire contract
// (docs/protocol.md): the JSON objects on the wire, the error codes, the HTTP
// paths, the NATS subjects and the permissions they imply, the WebFinger
// property and link names, the SSE event names and the size and poll limits.
// Every such constant is spelled here and only here; the server and the
// clients both import it.
//
// It is a leaf: a module of its own that imports only the standard library,
// so a client depends on it without inheriting anything of the server.
// The identity rules (handles, keys, signatures, the canonical strings that
// are signed) are its sibling module, github.com/kez-chat/kezd/identity.
package protocol

import "time"

// HTTP paths of the API. The per-handle paths are built with the functions
// below; the server registers its routes with them too (with ":handle").
const (
	PathHandles   = "/v1/handles"
	PathMessages  = "/v1/messages"
	PathInbox     = "/v1/inbox"
	PathWebFinger = "/.well-known/webfinger"
)

// HandlePath is the path of a handle's public record, /v1/handles/<handle>.
func HandlePath(handle string) string { return PathHandles + "/" + handle }

// KeysPath is the path a handle's keys are rotated on, /v1/handles/<handle>/keys.
func KeysPath(handle string) string { return HandlePath(handle) + "/keys" }

// InboxPath is the path of a handle's inbox, /v1/inbox/<handle>.
func InboxPath(handle string) string { return PathInbox + "/" + handle }

// StreamPath is the path of a handle's inbox stream, /v1/inbox/<handle>/stream.
func StreamPath(handle string) string { return InboxPath(handle) + "/stream" }

// MaxEnvelope is the largest envelope, in bytes of compact JSON text, that a
// message may carry.
const MaxEnvelope = 64 << 10

// MaxEnvelopeDepth is the deepest an envelope may nest arrays and objects
// (kezd's decision; docs/protocol.md). kez envelopes are a few levels deep;
// a poll page and an SSE event wrap the envelope in three more, and every
// client's JSON decoder has a depth limit of its own (Go's is 10,000), so
// one absurdly deep envelope would otherwise make a recipient's whole inbox
// page undecodable.
const MaxEnvelopeDepth = 64

// MaxSendBody bounds a whole send request: the envelope plus room for the
// rest of the body (to, id, and whitespace a client may add).
const MaxSendBody = MaxEnvelope + 16<<10

// Poll limits: the page size when a poll names none, the largest page, and
// the longest a long-poll waits.
const (
	DefaultPollLimit = 100
	MaxPollLimit     = 1000
	MaxPollWait      = 30 * time.Second
)

// SSE event names of the inbox stream. A message event's id is its seq.
const (
	EventMessage = "message"
	EventReady   = "ready"
	EventReset   = "reset"
)

// LastEventIDHeader is the header a reconnecting stream client resumes with.
const LastEventIDHeader = "Last-Event-ID"

// PingIntervalHeader, on a stream's response, is kezd's statement of how
// often the stream pings when idle, in milliseconds (decimal): a client
// takes a connection silent for a few intervals for dead.
const PingIntervalHeader = "Kez-Ping-Interval"
