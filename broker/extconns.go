package broker

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// The connections of an external NATS, seen through its system account:
// what lets the auth callout cap a handle's NATS connections there as it
// does on the embedded server (authcallout.ConnCounter).
//
//   - A handle's connections on one server: that server's CONNZ, asked
//     directly ($SYS.REQ.SERVER.<id>.CONNZ), one round trip per login.
//   - Whether a connection is still open: every server announces each
//     client's disconnection ($SYS.ACCOUNT.<account>.DISCONNECT), and
//     extConns keeps the ones it heard for closedKeep. A connection it heard
//     nothing of is open. So one whose server died, or that closed while
//     kezd's system connection was down, is taken for open until the caller
//     gives up on it (the callout: when its login would have expired).

const (
	// serverConnzSubject asks one server for its connections.
	serverConnzSubject = "$SYS.REQ.SERVER.%s.CONNZ"
	// disconnectSubject is every account's client disconnections.
	disconnectSubject = "$SYS.ACCOUNT.*.DISCONNECT"
	// extConnzWait bounds a server's answer to CONNZ: a login waits for it.
	extConnzWait = 500 * time.Millisecond
	// closedKeep is how long a disconnection is remembered: long enough for
	// the callout's sweep (every second) to see it.
	closedKeep = 5 * time.Minute
)

// serverToken is what a server ID must look like to name a subject.
var serverToken = regexp.MustCompile(`^[A-Za-z0-9]{1,128}$`)

type clientKey struct {
	server string
	cid    uint64
}

// extConns is an external NATS's connections, through kezd's system user.
type extConns struct {
	nc  *nats.Conn
	log *slog.Logger
	now func() time.Time

	mu     sync.Mutex
	closed map[clientKey]time.Time // disconnections heard, and when
	pruned time.Time
}

func startExtConns(nc *nats.Conn, log *slog.Logger) (*extConns, error) {
	e := &extConns{nc: nc, log: log, now: time.Now, closed: map[clientKey]time.Time{}}
	// The subscription ends with the connection.
	if _, err := nc.Subscribe(disconnectSubject, e.disconnected); err != nil {
		return nil, fmt.Errorf("subscribe to nats disconnections: %w", err)
	}
	return e, nil
}

// disconnected records a server's announcement of a client's disconnection.
func (e *extConns) disconnected(m *nats.Msg) {
	var ev struct {
		Server struct {
			ID string `json:"id"`
		} `json:"server"`
		Client struct {
			ID uint64 `json:"id"`
		} `json:"client"`
	}
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Server.ID == "" || ev.Client.ID == 0 {
		return
	}
	now := e.now()
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed[clientKey{ev.Server.ID, ev.Client.ID}] = now
	if now.Sub(e.pruned) >= closedKeep {
		e.pruned = now
		for k, at := range e.closed {
			if now.Sub(at) >= closedKeep {
				delete(e.closed, k)
			}
		}
	}
}

// handleConnections asks server serverID for the connections logged in as
// handle; ok is false when it does not answer in time.
func (e *extConns) handleConnections(serverID, handle string) (int, bool) {
	if !serverToken.MatchString(serverID) {
		return 0, false
	}
	req, _ := json.Marshal(server.ConnzEventOptions{ConnzOptions: server.ConnzOptions{Username: true, User: handle, Limit: 1 << 16}})
	m, err := e.nc.Request(fmt.Sprintf(serverConnzSubject, serverID), req, extConnzWait)
	if err != nil {
		e.log.Debug("nats server did not answer connz", "server", serverID, "err", err)
		return 0, false
	}
	var res struct {
		Data *struct {
			Conns []json.RawMessage `json:"connections"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &res); err != nil || res.Data == nil {
		return 0, false
	}
	return len(res.Data.Conns), true
}

// clientOpen reports whether the connection cid of server serverID is open:
// false once its server announced its disconnection.
func (e *extConns) clientOpen(serverID string, cid uint64) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, closed := e.closed[clientKey{serverID, cid}]
	return !closed
}
