package httpapi

import (
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
}

func newCaps(what string, total, perHandle, perIP int) *caps {
	return &caps{what: what, total: total, perHandle: perHandle, perIP: perIP,
		byHandle: map[string]int{}, byIP: map[string]int{}}
}

// retryAfterCap is the Retry-After of a refusal at a cap, which lasts until
// something open ends: a guess, as good as any.
const retryAfterCap = 5e9 // 5 s

// acquire counts one more for handle and ip, or says which cap refuses it.
func (k *caps) acquire(handle, ip string) error {
	refuse := func(format string, args ...any) error {
		e := chat.Errorf(protocol.CodeRateLimited, format, args...)
		e.RetryAfter = retryAfterCap
		return e
	}
	switch {
	case k.byHandle[handle] >= k.perHandle:
		return refuse("handle %q has %d %s open here; close one first", handle, k.perHandle, k.what)
	case k.byIP[ip] >= k.perIP:
		return refuse("your address has %d %s open here, its limit; close one first", k.perIP, k.what)
	case k.open >= k.total:
		return refuse("this server has %d %s open, its limit; retry later", k.open, k.what)
	}
	k.open++
	k.byHandle[handle]++
	k.byIP[ip]++
	return nil
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
