package broker

import (
	"encoding/json"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The connections of an external NATS, counted through its system account:
// what lets the auth callout cap a handle's NATS connections there
// (authcallout.ConnCounter). Every server is asked at once for the handle's
// connections ($SYS.REQ.SERVER.PING.CONNZ) and the answers are summed, so
// the count is the whole NATS's, whichever kezd instance asks: connections
// that outlived the instance that let them in, or that were on a server
// since shut down, count for what they are (open or not) without any lease.
// What it cannot see is a login granted a moment before that its server has
// not yet admitted: logins of one handle at the same moment can pass the
// cap by as many as they are.

const (
	// extConnzWait bounds the wait for the first server's answer, and
	// extConnzQuiet for each further one: nobody says how many servers there
	// are, and a login waits for them.
	extConnzWait  = 500 * time.Millisecond
	extConnzQuiet = 50 * time.Millisecond
)

// extConns is an external NATS's connections, through kezd's system user.
type extConns struct {
	nc  *nats.Conn
	log *slog.Logger
}

// handleConnections counts the connections logged in as handle on every
// server that answers; ok is false when none does in time.
func (e *extConns) handleConnections(handle string) (n int, ok bool) {
	inbox := e.nc.NewRespInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		return 0, false
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Only the application account's, where the callout puts every login:
	// a user of the same name in another account is not the handle, nor is
	// a connection whose own login is still pending.
	req, _ := json.Marshal(server.ConnzEventOptions{ConnzOptions: server.ConnzOptions{
		Username: true, User: handle, Account: AccountApp, Limit: 1 << 16}})
	if err := e.nc.PublishRequest(connzPingSubject, inbox, req); err != nil {
		e.log.Debug("cannot ask the nats servers for connections", "err", err)
		return 0, false
	}
	for wait := extConnzWait; ; wait = extConnzQuiet {
		m, err := sub.NextMsg(wait)
		if err != nil {
			if !ok {
				e.log.Debug("no nats server answered connz", "err", err)
			}
			return n, ok
		}
		var res struct {
			Data *struct {
				NumConns int `json:"num_connections"`
			} `json:"data"`
		}
		if err := json.Unmarshal(m.Data, &res); err != nil || res.Data == nil || res.Data.NumConns < 0 {
			continue
		}
		n += res.Data.NumConns
		ok = true
	}
}
