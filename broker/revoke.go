package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

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

// OnRevocation disconnects, for every revocation announced by any
// instance, the NATS clients logged in as its handle (see disconnectKeys):
// on the embedded server directly, on an external one through its system
// account when kezd has a system user (without one, such a client stays
// connected until its login expires: see docs/protocol.md). Then it calls
// revoked with the revocation.
// revoked runs on the subscription's goroutine, one revocation at a time.
// stop ends the subscription.
func (b *Broker) OnRevocation(revoked func(chat.Revocation)) (stop func(), err error) {
	sub, err := b.nc.Subscribe(RevocationSubject, func(m *nats.Msg) {
		var rev chat.Revocation
		if err := json.Unmarshal(m.Data, &rev); err != nil || identity.ValidateHandle(rev.Handle) != nil {
			b.log.Warn("ignoring a malformed revocation", "err", err)
			return
		}
		// First the connections, which need no store: revoked may wait
		// for one (up to its own timeout), and the contract's 2 s bound
		// should not.
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
// as rev.Handle, when rev retires a key. It lists them once: the logins of
// a retired key that are granted but not yet set up are the callout's to
// close (authcallout.Service.Revoked, through KickClient). A callout login
// is named for its handle (the server then forgets the nkey it presented),
// so the connections of the retired key cannot be told from those of a key
// registered since: all go, and a client with the current key logs in
// again at once, while one with a retired key is refused.
func (b *Broker) disconnectKeys(rev chat.Revocation) {
	if len(rev.Keys) == 0 {
		return
	}
	if b.srv == nil {
		if b.sys != nil {
			b.kickExternal(rev.Handle)
		}
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

// ErrCannotKick is KickClient's error for a connection on a server this
// instance cannot close connections on: another instance's embedded server.
var ErrCannotKick = errors.New("not a server this instance can close connections on")

// KickClient closes the connection cid on the server serverID, whether its
// login is decided yet or not: on the embedded server directly, on an
// external NATS through the system user. It fails for another instance's
// embedded server and for an external NATS without a system user.
func (b *Broker) KickClient(serverID string, cid uint64) error {
	switch {
	case b.srv != nil && b.srv.ID() == serverID:
		return b.srv.DisconnectClientByID(cid)
	case b.srv == nil && b.sys != nil && serverID != "":
		kick, _ := json.Marshal(server.KickClientReq{CID: cid})
		m, err := b.sys.Request(fmt.Sprintf(kickSubject, serverID), kick, kickWait)
		if err != nil {
			return err
		}
		var res struct {
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if json.Unmarshal(m.Data, &res) == nil && res.Error != nil {
			return errors.New(res.Error.Description)
		}
		return nil
	}
	return ErrCannotKick
}

// System-account requests of nats-server.
const (
	connzPingSubject = "$SYS.REQ.SERVER.PING.CONNZ"
	kickSubject      = "$SYS.REQ.SERVER.%s.KICK"
)

// kickWait bounds how long kickExternal collects the servers' answers: the
// first must come within kickWait, each further one within kickQuiet of the
// last (a PING goes to every server, and nobody says how many there are).
const (
	kickWait  = time.Second
	kickQuiet = 250 * time.Millisecond
)

// askConnz asks every server of the external NATS, through the system
// user, for its connections logged in as handle in account ("" for any):
// each answers on the returned subscription, which the caller unsubscribes.
func (b *Broker) askConnz(handle, account string) (*nats.Subscription, error) {
	inbox := b.sys.NewRespInbox()
	sub, err := b.sys.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	req, _ := json.Marshal(server.ConnzEventOptions{ConnzOptions: server.ConnzOptions{
		Username: true, User: handle, Account: account, Limit: 1 << 16}})
	if err := b.sys.PublishRequest(connzPingSubject, inbox, req); err != nil {
		_ = sub.Unsubscribe()
		return nil, err
	}
	return sub, nil
}

// connzAnswer is one server's answer to askConnz; Data is nil in an error
// answer.
type connzAnswer struct {
	Server struct {
		ID string `json:"id"`
	} `json:"server"`
	Data *struct {
		NumConns int `json:"num_connections"`
		Conns    []struct {
			CID uint64 `json:"cid"`
		} `json:"connections"`
	} `json:"data"`
}

// decodeConnz reads m as a server's answer, false for anything else.
func decodeConnz(m *nats.Msg) (connzAnswer, bool) {
	var res connzAnswer
	if err := json.Unmarshal(m.Data, &res); err != nil || res.Server.ID == "" || res.Data == nil || res.Data.NumConns < 0 {
		return connzAnswer{}, false
	}
	return res, true
}

// kickExternal asks every server of the external NATS for the connections
// logged in as handle, then has each server kick its own.
func (b *Broker) kickExternal(handle string) {
	sub, err := b.askConnz(handle, "")
	if err != nil {
		b.log.Warn("revocation: cannot ask the nats servers for connections", "handle", handle, "err", err)
		return
	}
	defer sub.Unsubscribe()
	for wait := kickWait; ; wait = kickQuiet {
		m, err := sub.NextMsg(wait)
		if err != nil {
			return // no more answers
		}
		res, ok := decodeConnz(m)
		if !ok {
			continue
		}
		for _, c := range res.Data.Conns {
			if err := b.KickClient(res.Server.ID, c.CID); err != nil {
				b.log.Warn("revocation: nats server did not kick a client", "handle", handle, "server", res.Server.ID, "cid", c.CID, "err", err)
				continue
			}
			b.log.Info("nats client disconnected: a key of its handle was revoked", "handle", handle, "server", res.Server.ID, "cid", c.CID)
		}
	}
}
