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
// Every login of a retired key is caught, whatever the timing. A login
// this callout answered for another instance's embedded server (when that
// instance did not take it in time, see forwardWait) is closed by that
// instance, which Revoked asks to (kickElsewhere); only if it does not
// answer does the login end no sooner than its own listing of the handle's
// connections. Revocations reach every instance, and each kicks the logins
// its own callout decided.
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

// The cap on a handle's connections (Config.MaxConnsPerHandle) counts the
// connections its server has set up, and a login granted a moment before
// is not among them yet: logins of one handle at the same moment all saw
// the same count and passed the cap together. So each login of a handle
// the cap applies to first reserves its place among the handle's granted
// logins (inflight.byHandle), in order, and only then counts: the server's
// connections, plus the handle's logins reserved before its own that are
// neither among them (set up, so counted already) nor closed. Of two logins
// granted, the later one counted the earlier either way, so the last one
// granted counted all the others: they cannot pass the cap together. And
// the first logins of a herd are not refused for those that come after. A
// reservation is given back when its login is refused, and lasts until its
// server's auth timeout has passed; it is not dropped when its connection
// appears, as a login counting at the same moment may have asked its server
// before it did.

// inflight is the logins this instance's callout has decided, or is
// deciding, whose server may still set them up.
type inflight struct {
	mu       sync.Mutex
	byKey    map[string]map[clientRef]connLease // by the signing key presented (hex)
	byHandle map[string]map[clientRef]connLease // reserved for the cap, by handle
	n        int                                // entries in both
	pruneAt  int                                // n at which expired entries are next pruned
	seq      uint64                             // of the last reservation
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
	f.addLocked(f.byKey, key, l, now)
}

// reserve reserves the login l's place among the logins of l.handle, and
// returns its seq.
func (f *inflight) reserve(l connLease, now time.Time) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.byHandle == nil {
		f.byHandle = map[string]map[clientRef]connLease{}
	}
	f.seq++
	l.seq = f.seq
	f.addLocked(f.byHandle, l.handle, l, now)
	return l.seq
}

func (f *inflight) addLocked(by map[string]map[clientRef]connLease, k string, l connLease, now time.Time) {
	if f.n >= max(f.pruneAt, inflightPrune) {
		f.pruneLocked(now)
		f.pruneAt = 2 * f.n
	}
	m := by[k]
	if m == nil {
		m = map[clientRef]connLease{}
		by[k] = m
	}
	ref := clientRef{l.server, l.cid}
	if _, again := m[ref]; !again {
		f.n++
	}
	m[ref] = l
}

// end forgets the login l of key ("": none recorded), and its
// reservation if it has one: it was refused.
func (f *inflight) end(key string, l connLease) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ref := clientRef{l.server, l.cid}
	f.removeLocked(f.byKey, key, ref)
	if l.handle != "" {
		f.removeLocked(f.byHandle, l.handle, ref)
	}
}

func (f *inflight) removeLocked(by map[string]map[clientRef]connLease, k string, ref clientRef) {
	m := by[k]
	if _, ok := m[ref]; !ok {
		return
	}
	delete(m, ref)
	f.n--
	if len(m) == 0 {
		delete(by, k)
	}
}

// reserved counts the logins reserved for handle before seq that may still
// open a connection not among its server's connections set up: not yet
// expired, not in setUp, and not known to be closed (open answers false
// for ok when it cannot tell). Expired ones are dropped.
func (f *inflight) reserved(handle string, seq uint64, setUp map[clientRef]bool, open func(server string, cid uint64) (bool, bool), now time.Time) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := f.byHandle[handle]
	n := 0
	for ref, l := range m {
		switch {
		case l.seq >= seq || setUp[ref]:
		case now.After(l.until):
			f.removeLocked(f.byHandle, handle, ref)
		default:
			if isOpen, ok := open(ref.server, ref.cid); ok && !isOpen {
				// Closed for good (cids are not reused): nobody counts it.
				f.removeLocked(f.byHandle, handle, ref)
				continue
			}
			n++
		}
	}
	return n
}

// take removes and returns the logins of keys whose servers may still set
// them up, and their reservations among handle's logins: they are about
// to be closed, and must not count against the handle's cap meanwhile.
func (f *inflight) take(handle string, keys []string, now time.Time) []connLease {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []connLease
	for _, k := range keys {
		for ref, l := range f.byKey[k] {
			if !now.After(l.until) {
				out = append(out, l)
			}
			f.removeLocked(f.byHandle, handle, ref)
		}
		f.n -= len(f.byKey[k])
		delete(f.byKey, k)
	}
	return out
}

func (f *inflight) pruneLocked(now time.Time) {
	for _, by := range []map[string]map[clientRef]connLease{f.byKey, f.byHandle} {
		for k, m := range by {
			for ref, l := range m {
				if now.After(l.until) {
					delete(m, ref)
					f.n--
				}
			}
			if len(m) == 0 {
				delete(by, k)
			}
		}
	}
}
