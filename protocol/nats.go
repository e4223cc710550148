package protocol

import "strings"

// NATS subjects. A valid handle is a single subject token, so each of these
// names exactly one handle's subject.
const (
	// InboxPrefix starts every inbox subject, kez.chat.inbox.<handle>, on
	// which kezd publishes each stored message.
	InboxPrefix = "kez.chat.inbox."
	// SendPrefix starts every send subject, kez.chat.send.<handle>, on which
	// a handle requests a send; the last token is the sender.
	SendPrefix = "kez.chat.send."
	// ReplyInboxRoot is the root of every handle's reply inboxes,
	// _INBOX.<handle>.>, the only subjects a NATS request is answered on.
	ReplyInboxRoot = "_INBOX."
	// SeqHeader is the header of a live publish that carries its seq.
	SeqHeader = "Kez-Seq"
	// MACHeader is the header of a live publish that proves kezd published
	// it: an HMAC-SHA256 under a key of the deployment's (server-side only;
	// clients need not check it, their permissions keep others off inbox
	// subjects).
	MACHeader = "Kez-Mac"
	// RetryAfterHeader is the header of a rate_limited or inbox_full NATS reply: whole
	// seconds, as HTTP's Retry-After.
	RetryAfterHeader = "Retry-After"
)

// InboxSubject is the subject handle's messages are published on.
func InboxSubject(handle string) string { return InboxPrefix + handle }

// SendSubject is the subject handle sends on.
func SendSubject(handle string) string { return SendPrefix + handle }

// SendSubjects is what the send responder subscribes to: every handle's send
// subject.
const SendSubjects = SendPrefix + "*"

// SendSender returns the sender a send subject names, and false for a
// subject that is not one.
func SendSender(subject string) (string, bool) {
	return strings.CutPrefix(subject, SendPrefix)
}

// ReplyInboxPrefix is the prefix handle's NATS connection gives its reply
// inboxes (nats.go's CustomInboxPrefix): _INBOX.<handle>.
func ReplyInboxPrefix(handle string) string { return ReplyInboxRoot + handle }

// ReplyInboxes is the wildcard of handle's reply inboxes, _INBOX.<handle>.>.
func ReplyInboxes(handle string) string { return ReplyInboxPrefix(handle) + ".>" }

// IsReplyInbox reports whether subject is one of handle's reply inboxes: the
// only subjects kezd answers handle's requests on. It is derived from
// ReplyInboxes, the subscription Permissions grants.
func IsReplyInbox(handle, subject string) bool {
	return SubjectMatches(ReplyInboxes(handle), subject)
}

// Permissions is what a handle's NATS login may do: subscribe to its own
// inbox and its own reply inboxes, publish only its own sends, and never
// publish to any inbox. There is no response permission: a handle is a
// requester, never a responder.
type Permissions struct {
	PubAllow, PubDeny, SubAllow []string
}

// HandlePermissions returns handle's NATS permissions.
func HandlePermissions(handle string) Permissions {
	return Permissions{
		PubAllow: []string{SendSubject(handle)},
		PubDeny:  []string{InboxPrefix + ">"},
		SubAllow: []string{InboxSubject(handle), ReplyInboxes(handle)},
	}
}

// SubjectMatches reports whether subject matches the NATS subject pattern,
// in which "*" matches one token and a final ">" one or more.
func SubjectMatches(pattern, subject string) bool {
	for {
		p, prest, pmore := strings.Cut(pattern, ".")
		s, srest, smore := strings.Cut(subject, ".")
		switch {
		case s == "":
			return false // an empty token is no subject at all
		case p == ">" && !pmore:
			return !strings.Contains("."+subject+".", "..")
		case p != "*" && p != s:
			return false
		case pmore != smore:
			return false
		case !pmore:
			return true
		}
		pattern, subject = prest, srest
	}
}
