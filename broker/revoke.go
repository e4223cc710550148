package broker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
)

// RevocationSubject carries revocations between kezd instances: a handle's
// keys changed or it was deleted. Only kezd may use it: a logged-in user's
// permissions are exactly PROTOCOL.md's three subjects, none of them this.
const RevocationSubject = "kezd.internal.revocation"

// AnnounceRevocation publishes rev to every instance, this one included, and
// waits until the server has it, so that the announcement is on its way
// before the change is reported done.
func (b *Broker) AnnounceRevocation(ctx context.Context, rev chat.Revocation) error {
	data, err := json.Marshal(rev)
	if err != nil {
		return fmt.Errorf("announce revocation: %w", err)
	}
	if err := b.nc.Publish(RevocationSubject, data); err != nil {
		return fmt.Errorf("announce revocation: %w", err)
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("announce revocation: %w", err)
	}
	return nil
}

// OnRevocation calls revoked with every revocation announced by any
// instance, after disconnecting, on the embedded server, the NATS clients
// logged in as its handle (see disconnectKeys). (With an external NATS, such a
// client stays connected until its login expires: see docs/protocol.md.)
// revoked runs on the subscription's goroutine, one revocation at a time.
// stop ends the subscription.
func (b *Broker) OnRevocation(revoked func(chat.Revocation)) (stop func(), err error) {
	sub, err := b.nc.Subscribe(RevocationSubject, func(m *nats.Msg) {
		var rev chat.Revocation
		if err := json.Unmarshal(m.Data, &rev); err != nil || identity.ValidateHandle(rev.Handle) != nil {
			b.log.Warn("ignoring a malformed revocation", "err", err)
			return
		}
		b.disconnectKeys(rev)
		revoked(rev)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to revocations: %w", err)
	}
	if err := b.nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to revocations: %w", err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}

// disconnectKeys closes the embedded server's client connections logged in
// as rev.Handle, when rev retires a key. A callout login is named for its
// handle (the server then forgets the nkey it presented), so the connections
// of the retired key cannot be told from those of a key registered since:
// all go, and a client with the current key logs in again at once, while
// one with a retired key is refused.
func (b *Broker) disconnectKeys(rev chat.Revocation) {
	if b.srv == nil || len(rev.Keys) == 0 {
		return
	}
	conns, err := b.srv.Connz(&server.ConnzOptions{Username: true, User: rev.Handle, Limit: 1 << 16})
	if err != nil {
		b.log.Warn("revocation: cannot list nats connections", "handle", rev.Handle, "err", err)
		return
	}
	for _, c := range conns.Conns {
		if err := b.srv.DisconnectClientByID(c.Cid); err == nil {
			b.log.Info("nats client disconnected: a key of its handle was revoked", "handle", rev.Handle, "cid", c.Cid)
		}
	}
}
