package httpapi

import (
	"context"
	"strings"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

// caps counts open things of one kind (streams, or long-polls) on this
// instance, in all, per handle and per client IP, and refuses one beyond any
// of its caps with 429 rate_limited. The per-IP cap keeps one client holding
// many handles from taking every slot of the instance from everyone else.
// Its fields are guarded by the Server's mu.
type caps struct {
	what                    string // "streams", "long-polls"
	total, perHandle, perIP int

	open     int
	byHandle map[string]int
	byIP     map[string]int
	refused  map[string]int64 // by cap: <what>_per_handle, _per_ip, _per_instance
}

func newCaps(what string, total, perHandle, perIP int) *caps {
	k := &caps{what: what, total: total, perHandle: perHandle, perIP: perIP,
		byHandle: map[string]int{}, byIP: map[string]int{}, refused: map[string]int64{}}
	for _, c := range []string{"per_handle", "per_ip", "per_instance"} {
		k.refused[k.metric(c)] = 0
	}
	return k
}

// metric names one of k's caps, as CapNames does.
func (k *caps) metric(cap string) string {
	return strings.ReplaceAll(k.what, "-", "_") + "_" + cap
}

// retryAfterCap is the Retry-After of a refusal at a cap, which lasts until
// something open ends: a guess, as good as any.
const retryAfterCap = 5e9 // 5 s

// acquire counts one more for handle and ip, or says which cap refuses it.
func (k *caps) acquire(handle, ip string) error {
	refuse := k.refuse
	switch {
	case k.byHandle[handle] >= k.perHandle:
		return refuse("per_handle", "handle %q has %d %s open here; close one first", handle, k.perHandle, k.what)
	case k.byIP[ip] >= k.perIP:
		return refuse("per_ip", "your address has %d %s open here, its limit; close one first", k.perIP, k.what)
	case k.open >= k.total:
		return refuse("per_instance", "this server has %d %s open, its limit; retry later", k.open, k.what)
	}
	k.open++
	k.byHandle[handle]++
	k.byIP[ip]++
	return nil
}

// refuse counts a refusal at cap and returns its error.
func (k *caps) refuse(cap, format string, args ...any) error {
	k.refused[k.metric(cap)]++
	e := chat.Errorf(protocol.CodeRateLimited, format, args...)
	e.RetryAfter = retryAfterCap
	return e
}

// SharedCaps is the count of open streams and long-polls that every
// instance of a deployment shares (*postgres.Leases implements it).
// AcquireLease takes a lease of kind ("streams", "long-polls") for handle
// and ip when fewer than perHandle are open for handle and fewer than perIP
// for ip; otherwise ok is false and handleOpen and ipOpen say which cap
// refused. ReleaseLease gives one back.
type SharedCaps interface {
	AcquireLease(ctx context.Context, kind, handle, ip string, perHandle, perIP int) (id int64, handleOpen, ipOpen int, ok bool, err error)
	ReleaseLease(ctx context.Context, id int64) error
}

// release gives back what acquire counted.
func (k *caps) release(handle, ip string) {
	k.open--
	if k.byHandle[handle]--; k.byHandle[handle] <= 0 {
		delete(k.byHandle, handle)
	}
	if k.byIP[ip]--; k.byIP[ip] <= 0 {
		delete(k.byIP, ip)
	}
}
