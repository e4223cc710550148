package broker

import (
	"log/slog"
	"sync"
	"time"

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
// not yet admitted: the callout counts those it granted itself (see
// authcallout's inflight.go), but not those of other kezd instances: logins
// of one handle at the same moment through several instances can pass the
// cap, each instance granting up to it.

const (
	// extConnzWait bounds the wait for the servers' answers. A login waits
	// for them, and nobody says how many servers there are, so extConns
	// remembers the ones that answered: once every server it knows has
	// answered, it waits no longer; while one has not, it waits at most
	// extConnzQuiet after the last answer. Every extConnzRelearn it waits for
	// whoever answers (extConnzQuiet after the last), so that a server
	// added since is counted, and forgets the servers that did not answer
	// that relearning nor the one before (a server that was slow once is
	// still waited for).
	extConnzWait    = 500 * time.Millisecond
	extConnzQuiet   = 100 * time.Millisecond
	extConnzRelearn = 10 * time.Second
)

// extConns is an external NATS's connections, through kezd's system user.
type extConns struct {
	ask func(handle, account string) (*nats.Subscription, error) // Broker.askConnz
	log *slog.Logger

	relearn time.Duration // extConnzRelearn; shorter in tests

	mu      sync.Mutex
	servers map[string]bool // known servers: true if they answered the last relearning
	learned time.Time       // when it was
}

// handleClients lists the connections logged in as handle on every server
// that answers; ok is false when none does in time.
func (e *extConns) handleClients(handle string) (clients []Client, ok bool) {
	start := time.Now()
	e.mu.Lock()
	known := e.servers
	relearn := len(known) == 0 || start.Sub(e.learned) >= e.relearn
	if relearn {
		known = nil
	}
	e.mu.Unlock()
	// Only the application account's, where the callout puts every login:
	// a user of the same name in another account is not the handle, nor is
	// a connection whose own login is still pending (it is in the global
	// account until then).
	sub, err := e.ask(handle, AccountApp)
	if err != nil {
		e.log.Debug("cannot ask the nats servers for connections", "err", err)
		return nil, false
	}
	defer func() { _ = sub.Unsubscribe() }()
	answered := map[string]bool{}
	missing := len(known)
	deadline := start.Add(extConnzWait)
	for missing > 0 || known == nil {
		wait := time.Until(deadline)
		if len(answered) > 0 {
			wait = min(wait, extConnzQuiet)
		}
		if wait <= 0 {
			break
		}
		m, err := sub.NextMsg(wait)
		if err != nil {
			break
		}
		res, isAnswer := decodeConnz(m)
		if !isAnswer || answered[res.Server.ID] {
			continue
		}
		answered[res.Server.ID] = true
		if _, isKnown := known[res.Server.ID]; isKnown {
			missing--
		}
		for _, c := range res.Data.Conns {
			clients = append(clients, Client{Server: res.Server.ID, CID: c.CID})
		}
	}
	if len(answered) == 0 {
		e.log.Debug("no nats server answered connz")
		return nil, false
	}
	if relearn {
		e.mu.Lock()
		for id, answeredLast := range e.servers {
			if _, again := answered[id]; answeredLast && !again {
				answered[id] = false // missed once: kept one more period
			}
		}
		e.servers, e.learned = answered, start
		e.mu.Unlock()
	}
	return clients, true
}
