package protocol

// WebFinger property names and link relations of a handle's JRD.
const (
	PropSigningKey    = "https://kez.chat/ns/signing-key"
	PropEncryptionKey = "https://kez.chat/ns/encryption-key"
	RelInbox          = "https://kez.chat/rel/inbox"
	RelStream         = "https://kez.chat/rel/stream"
	RelNATS           = "https://kez.chat/rel/nats"
)

// JRDContentType is the media type of a WebFinger answer.
const JRDContentType = "application/jrd+json"

// JRD is an RFC 7033 JSON Resource Descriptor, as WebFinger answers it.
type JRD struct {
	Subject    string            `json:"subject"`
	Aliases    []string          `json:"aliases,omitempty"`
	Properties map[string]string `json:"properties,omitempty"`
	Links      []JRDLink         `json:"links"`
}

// JRDLink is one link of a JRD.
type JRDLink struct {
	Rel  string `json:"rel"`
	Type string `json:"type,omitempty"`
	Href string `json:"href"`
}
