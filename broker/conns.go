package broker

import "github.com/nats-io/nats-server/v2/server"

// Client names a client connection: its ID on its server.
type Client struct {
	Server string
	CID    uint64
}

// HandleConnections counts the client connections logged in as handle (see
// HandleClients).
func (b *Broker) HandleConnections(serverID, handle string) (int, bool) {
	c, ok := b.HandleClients(serverID, handle)
	return len(c), ok
}

// HandleClients lists the client connections logged in as handle: on
// the embedded server when serverID is its ID, and on every server of an
// external NATS (serverID aside) through the system account (extconns.go).
// It reports false when it cannot: for another instance's embedded server
// (each instance sees only its own), with an external NATS but no system
// user, or when no external server answers in time.
func (b *Broker) HandleClients(serverID, handle string) ([]Client, bool) {
	if b.ext != nil {
		return b.ext.handleClients(handle)
	}
	if b.srv == nil || b.srv.ID() != serverID {
		return nil, false
	}
	// The application account's only, as with an external NATS: a
	// connection whose login is still pending is in the global account.
	conns, err := b.srv.Connz(&server.ConnzOptions{Username: true, User: handle, Account: AccountApp, Limit: 1 << 16})
	if err != nil {
		return nil, false
	}
	c := make([]Client, len(conns.Conns))
	for i, ci := range conns.Conns {
		c[i] = Client{Server: serverID, CID: ci.Cid}
	}
	return c, true
}

// ClientOpen reports whether the connection cid is open on the embedded
// server whose ID is serverID (a connection is open from its first byte,
// before its login is decided), and false for ok when it cannot tell: in
// external mode, or for another server of the cluster.
func (b *Broker) ClientOpen(serverID string, cid uint64) (open, ok bool) {
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
