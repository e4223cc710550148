package authcallout_test

import (
	"context"
	"errors"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store"
)

// countingLookup counts the store lookups of the logins it sees verified.
type countingLookup struct {
	authcallout.HandleLookup
	n atomic.Int64
}

func (c *countingLookup) HandleByKey(ctx context.Context, key string) (store.Handle, error) {
	c.n.Add(1)
	return c.HandleLookup.HandleByKey(ctx, key)
}

// Refused NATS logins are charged to the failed-authentication limit of the
// client's IP (defect: only HTTP's were): with a bucket of 3, three refused
// logins (an unknown key, a bad signature, a key presented under another
// handle) empty it; then even a good login from that IP is refused, as an
// authorization violation and without being verified (no lookup), until a
// token refills.
func TestFailedLoginsLimited(t *testing.T) {
	t.Parallel()
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			k := testKeys(t)
			url := s.start(t, k, authTimeout).url
			db := teststore.SQLite(t)
			alice, bob := register(t, db, "alice"), register(t, db, "bob")
			lookup := &countingLookup{HandleLookup: db}
			var clock atomic.Int64
			clock.Store(time.Now().UnixNano())
			limits := ratelimit.New(ratelimit.Config{
				Limits: map[ratelimit.Name]ratelimit.Limit{ratelimit.FailedAuth: {Burst: 3, Per: time.Hour}},
				Now:    func() time.Time { return time.Unix(0, clock.Load()) },
			})
			svc := startCallout(t, url, k, lookup, authcallout.Config{Limits: limits})

			refused := func(what string, opts []nats.Option) {
				t.Helper()
				nc, err := nats.Connect(url, opts...)
				if err == nil {
					nc.Close()
					t.Fatalf("%s: logged in", what)
				}
				if !errors.Is(err, nats.ErrAuthorization) {
					t.Fatalf("%s: err = %v, want an authorization violation", what, err)
				}
			}
			login(t, url, alice).Close()
			refused("unknown key", kezLogin("alice", newKey(t)))
			refused("bad signature", badSignature(t, alice))
			refused("key of another handle", kezLogin("bob", alice.priv))
			if got := limits.Refusals(ratelimit.FailedAuth); got != 0 {
				t.Fatalf("%d refusals by the limit within its bucket of 3", got)
			}

			looked := lookup.n.Load()
			refused("alice with her own key, once the bucket is empty", kezLogin("alice", alice.priv))
			refused("bob with his own key, once the bucket is empty", kezLogin("bob", bob.priv))
			if got := lookup.n.Load(); got != looked {
				t.Errorf("%d lookups for logins refused by the limit, want none", got-looked)
			}
			if got := limits.Refusals(ratelimit.FailedAuth); got != 2 {
				t.Errorf("%d refusals by the limit, want 2", got)
			}
			if st := svc.Stats(); st.Authorized != 1 || st.Rejected != 5 {
				t.Errorf("stats %+v, want 1 authorized and 5 rejected", st)
			}

			// 3 per hour: one token is back after 20 minutes.
			clock.Add(int64(20 * time.Minute))
			login(t, url, alice).Close()
			refused("unknown key after the refill", kezLogin("alice", newKey(t)))
			refused("alice after the refill was spent", kezLogin("alice", alice.priv))
		})
	}
}

// A login arriving from a trusted proxy is not charged: the host the
// server reports is the proxy's, shared by every client behind it, so
// charging it would let one client's failures lock all of them out.
func TestFailedLoginsFromTrustedProxyNotCharged(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	url := embedded.start(t, k, authTimeout).url
	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	limits := ratelimit.New(ratelimit.Config{Limits: map[ratelimit.Name]ratelimit.Limit{ratelimit.FailedAuth: {Burst: 1, Per: time.Hour}}})
	startCallout(t, url, k, db, authcallout.Config{Limits: limits, TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	for range 3 {
		if nc, err := nats.Connect(url, kezLogin("alice", newKey(t))...); err == nil {
			nc.Close()
			t.Fatal("an unknown key logged in")
		}
	}
	login(t, url, alice).Close()
	if got := limits.Refusals(ratelimit.FailedAuth); got != 0 {
		t.Errorf("%d refusals by the limit for logins through a trusted proxy", got)
	}
}
