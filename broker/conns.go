package broker

import "github.com/nats-io/nats-server/v2/server"

// HandleConnections counts the client connections logged in as handle on
// the server whose ID is serverID: the embedded server's directly, an
// external server's through the system account (extconns.go). It reports
// false when it cannot: for another instance's embedded server (each
// instance sees only its own), with an external NATS but no system user,
// or when the external server does not answer in time.
func (b *Broker) HandleConnections(serverID, handle string) (int, bool) {
	if b.ext != nil {
		return b.ext.handleConnections(serverID, handle)
	}
	if b.srv == nil || b.srv.ID() != serverID {
		return 0, false
	}
	conns, err := b.srv.Connz(&server.ConnzOptions{Username: true, User: handle, Limit: 1 << 16})
	if err != nil {
		return 0, false
	}
	return len(conns.Conns), true
}

// ClientOpen reports whether the connection cid is open on the server whose
// ID is serverID (a connection is open from its first byte, before its
// login is decided), and false for ok when it cannot tell: for another
// instance's embedded server, or with an external NATS but no system user.
// On an external server a connection is open until its server announces
// that it closed (extconns.go), so one lost without that announcement (its
// server died) stays open here: the caller must bound it.
func (b *Broker) ClientOpen(serverID string, cid uint64) (open, ok bool) {
	if b.ext != nil {
		return b.ext.clientOpen(serverID, cid), true
	}
	if b.srv == nil || b.srv.ID() != serverID {
		return false, false
	}
	return b.srv.GetClient(cid) != nil, true
}

// ServerID is the embedded server's ID, or "" in external mode.
func (b *Broker) ServerID() string {
	if b.srv == nil {
		return ""
	}
	return b.srv.ID()
}
