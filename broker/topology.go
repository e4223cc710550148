package broker

// The NATS topology kezd runs on, the embedded server's and the one
// "kezd nats-config" prints for an external server alike: three accounts,
// the callout service's user and what it may do, and the callout subject.
// Both are built from these names, and nothing else spells them.
const (
	// AccountSystem is the system account.
	AccountSystem = "SYS"
	// AccountAuth holds the auth-callout service user; callout requests go there.
	AccountAuth = "AUTH"
	// AccountApp is the application account: kezd's own connection and every
	// kez user. A callout's user JWT must have this as its audience.
	AccountApp = "APP"
)

// CalloutSubject is where the server sends authorization requests (in
// AccountAuth); nats-server lets no user of that account publish to it.
const CalloutSubject = "$SYS.REQ.USER.AUTH"

// CalloutReplies is where the callout service answers: the server's
// requests carry a reply subject under it.
const CalloutReplies = "$SYS._INBOX.>"

// ServicePermissions is what the callout service's user may do: take
// requests on CalloutSubject and answer them, nothing else.
var ServicePermissions = struct{ Publish, Subscribe string }{Publish: CalloutReplies, Subscribe: CalloutSubject}
