package authcallout

import (
	"crypto/ed25519"
	"encoding/hex"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"
)

// A revocation must also end the logins that were being decided when it
// was committed. The broker's revocation kick lists the handle's
// connections once, and a login the callout granted with the key just
// before it was retired, but that its server has not yet set up, is not in
// that list: it would live for its whole JWT. So the callout remembers
// every login it decides, by the signing key it presents, from before the
// key is looked up until its server's auth timeout has passed (the
// request's expiry, with leaseSlack for the clocks); Revoked kicks every
// such login of a retired key by its connection ID, set up or not (a
// connection the server closes while its login is pending never joins an
// account: nats-server refuses to register a closed client).
//
// Every login of a retired key is caught, whatever the timing. Revocations
// reach every instance, and each kicks the logins its own callout decided.
// A login recorded before this instance's Revoked looked is kicked by it;
// one recorded after looks its key up after the change was committed (the
// lookup is not cached) and is refused. Past its server's auth timeout a
// login is either refused for good or set up, and then the broker's list of
// the handle's connections has it.

// clientRef names a connection: its ID on its server.
type clientRef struct {
	server string
	cid    uint64
}

// inflight is the logins this instance's callout has decided, or is
// deciding, whose server may still set them up.
type inflight struct {
	mu      sync.Mutex
	byKey   map[string]map[clientRef]connLease // by the signing key presented (hex)
	n       int                                // entries in byKey
	pruneAt int                                // n at which expired entries are next pruned
}

// inflightPrune is the least n at which expired entries are pruned: then
// again each time n doubles, so pruning costs O(1) a login.
const inflightPrune = 1024

// presentedKey is the signing key a login presents, as hex, or "" when its
// nkey is no Ed25519 user key (authorize refuses it).
func presentedKey(req *jwt.AuthorizationRequestClaims) string {
	raw, err := nkeys.Decode(nkeys.PrefixByteUser, []byte(req.ConnectOptions.Nkey))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return ""
	}
	return hex.EncodeToString(raw)
}

// loginUntil is when the server that sent req has given up on it at the
// latest: its expiry (whole seconds, rounded down by the server) with
// leaseSlack for the clocks, or a bound of our own if it has none.
func loginUntil(req *jwt.AuthorizationRequestClaims, now time.Time) time.Time {
	if req.Expires <= 0 {
		return now.Add(lookupTimeout + leaseSlack)
	}
	return time.Unix(req.Expires, 0).Add(time.Second + leaseSlack)
}

// begin records the login l of key.
func (f *inflight) begin(key string, l connLease, now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byKey == nil {
		f.byKey = map[string]map[clientRef]connLease{}
	}
	if f.n >= max(f.pruneAt, inflightPrune) {
		f.pruneLocked(now)
		f.pruneAt = 2 * f.n
	}
	m := f.byKey[key]
	if m == nil {
		m = map[clientRef]connLease{}
		f.byKey[key] = m
	}
	ref := clientRef{l.server, l.cid}
	if _, again := m[ref]; !again {
		f.n++
	}
	m[ref] = l
}

// end forgets the login l of key: it was refused.
func (f *inflight) end(key string, l connLease) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.byKey[key]
	ref := clientRef{l.server, l.cid}
	if _, ok := m[ref]; !ok {
		return
	}
	delete(m, ref)
	f.n--
	if len(m) == 0 {
		delete(f.byKey, key)
	}
}

// take removes and returns the logins of keys whose servers may still set
// them up.
func (f *inflight) take(keys []string, now time.Time) []connLease {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []connLease
	for _, k := range keys {
		for _, l := range f.byKey[k] {
			if !now.After(l.until) {
				out = append(out, l)
			}
		}
		f.n -= len(f.byKey[k])
		delete(f.byKey, k)
	}
	return out
}

func (f *inflight) pruneLocked(now time.Time) {
	for k, m := range f.byKey {
		for ref, l := range m {
			if now.After(l.until) {
				delete(m, ref)
				f.n--
			}
		}
		if len(m) == 0 {
			delete(f.byKey, k)
		}
	}
}
