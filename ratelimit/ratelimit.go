// Package ratelimit owns kezd's rate limits (PROTOCOL.md v1.1 "Rate
// limits"): token buckets keyed by a client IP, a handle or a (sender,
// recipient) pair, that hold for the deployment rather than the instance.
//
// Each bucket's truth is in the shared store (Postgres), but an instance
// does not ask it per request: it leases a batch of tokens (an eighth of the
// bucket) and spends them locally, and it remembers a refusal until the
// bucket will have refilled, so that a flood costs no queries. N instances
// together admit at most what the bucket holds; each can hold back at most
// one lease of it. Without a shared store (SQLite, which is one machine)
// the buckets are local golang.org/x/time/rate limiters.
package ratelimit

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Name names one limit; it prefixes its buckets' keys and labels its metric.
type Name string

// The limits of PROTOCOL.md v1.1 that are rates (the stream, long-poll and
// NATS connection caps are counts of open things, kept where they are open).
const (
	Registrations Name = "registrations_per_ip"
	FailedAuth    Name = "failed_auth_per_ip"
	Sends         Name = "sends_per_handle"
	PairMessages  Name = "messages_per_pair"
	PairBytes     Name = "bytes_per_pair"
)

// sharedKeySplit joins a limit's name and a bucket's key in the shared store.
const sharedKeySplit = "|"

// Names lists every limit, for metrics and configuration.
var Names = []Name{Registrations, FailedAuth, Sends, PairMessages, PairBytes}

// Limit is a token bucket: it holds at most Burst tokens and refills at
// Burst per Per. A zero Burst turns the limit off.
type Limit struct {
	Burst float64
	Per   time.Duration
}

// rate is the refill in tokens per second.
func (l Limit) rate() float64 { return l.Burst / l.Per.Seconds() }

// off reports whether the limit admits everything.
func (l Limit) off() bool { return l.Burst <= 0 || l.Per <= 0 }

// lease is how many tokens an instance takes from the shared bucket at once.
func (l Limit) lease() float64 { return max(1, l.Burst/8) }

// String is the limit as ParseLimit reads it: "20/1h", "8MiB/1m4s".
func (l Limit) String() string {
	if l.off() {
		return "off"
	}
	return formatAmount(l.Burst) + "/" + l.Per.String()
}

// ParseLimit reads "N/D": at most N at once, refilling N per duration D. N
// may carry a KiB, MiB or GiB suffix (for byte limits). "off" turns the
// limit off.
func ParseLimit(s string) (Limit, error) {
	if s == "off" {
		return Limit{}, nil
	}
	n, d, ok := strings.Cut(s, "/")
	if !ok {
		return Limit{}, fmt.Errorf("%q: want N/duration, e.g. 20/1h, or off", s)
	}
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(n, u.suffix) {
			n, mult = strings.TrimSuffix(n, u.suffix), u.m
			break
		}
	}
	burst, err := strconv.ParseUint(n, 10, 40)
	if err != nil || burst == 0 {
		return Limit{}, fmt.Errorf("%q: the amount must be a positive whole number", s)
	}
	per, err := time.ParseDuration(d)
	if err != nil || per <= 0 {
		return Limit{}, fmt.Errorf("%q: the period must be a positive duration such as 1m", s)
	}
	return Limit{Burst: float64(burst) * mult, Per: per}, nil
}

func formatAmount(v float64) string {
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.m && v == float64(int64(v/u.m))*u.m {
			return strconv.FormatInt(int64(v/u.m), 10) + u.suffix
		}
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// Defaults are limits an ordinary chat user never meets: docs/protocol.md
// says why each is what it is.
var Defaults = map[Name]Limit{
	Registrations: {Burst: 20, Per: time.Hour},
	FailedAuth:    {Burst: 60, Per: time.Minute},
	Sends:         {Burst: 300, Per: 30 * time.Second},
	PairMessages:  {Burst: 200, Per: 40 * time.Second},
	PairBytes:     {Burst: 8 << 20, Per: 64 * time.Second},
}

// Shared is the deployment's bucket state (the Postgres store implements it).
type Shared interface {
	// TakeTokens refills key's bucket (Burst tokens at most, refilling at
	// rate per second), then takes between need and want tokens from it, as
	// many as it holds, or none when it holds fewer than need. It returns
	// what it took and the tokens left.
	TakeTokens(ctx context.Context, key string, rate, burst, need, want float64) (granted, left float64, err error)
}

// Refused is the error of a request beyond a limit.
type Refused struct {
	Limit      Name
	RetryAfter time.Duration
}

func (r *Refused) Error() string {
	return fmt.Sprintf("rate limit %s: retry after %s", r.Limit, r.RetryAfter)
}

// Config configures a Limiter.
type Config struct {
	// Limits sets each limit; a name that is absent, or off, admits everything.
	Limits map[Name]Limit
	// Shared, when set, holds the deployment's buckets; nil keeps them in
	// this process.
	Shared Shared
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// leaseTTL is how long an instance may spend a lease: tokens it has not
// spent by then are dropped, so a client moving between instances finds
// its budget where it is.
const leaseTTL = 10 * time.Second

// Limiter enforces the limits. A nil *Limiter admits everything (limits
// off). Create it with New.
type Limiter struct {
	limits map[Name]Limit
	shared Shared
	now    func() time.Time

	mu        sync.Mutex
	buckets   map[bucketKey]*bucket
	nextSweep int

	refused map[Name]*atomic.Int64
}

type bucketKey struct {
	name Name
	key  string
}

// bucket is what this instance knows of one bucket.
type bucket struct {
	local *rate.Limiter // without a shared store

	leased       float64   // tokens leased from the shared bucket, unspent
	leaseUntil   time.Time // when they are dropped
	blockedUntil time.Time // the shared bucket refused until then
	used         time.Time
}

// New returns a Limiter. It does no I/O.
func New(cfg Config) *Limiter {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	l := &Limiter{limits: map[Name]Limit{}, shared: cfg.Shared, now: now,
		buckets: map[bucketKey]*bucket{}, nextSweep: minSweep, refused: map[Name]*atomic.Int64{}}
	for _, n := range Names {
		l.refused[n] = new(atomic.Int64)
	}
	for n, lim := range cfg.Limits {
		if !lim.off() {
			l.limits[n] = lim
		}
		if l.refused[n] == nil {
			l.refused[n] = new(atomic.Int64)
		}
	}
	return l
}

// Refusals returns how many requests limit name has refused since start.
func (l *Limiter) Refusals(name Name) int64 {
	if l == nil || l.refused[name] == nil {
		return 0
	}
	return l.refused[name].Load()
}

// Take takes n tokens from name's bucket for key, or returns a *Refused
// saying when to retry. Other errors are the shared store's.
func (l *Limiter) Take(ctx context.Context, name Name, key string, n float64) error {
	if l == nil {
		return nil
	}
	lim, ok := l.limits[name]
	if !ok {
		return nil
	}
	if n > lim.Burst {
		// More than the bucket ever holds: retrying cannot help, but the
		// caller's own size limit is smaller than any sane bucket.
		return l.refuse(name, lim.Per)
	}
	now := l.now()
	bk := bucketKey{name, key}

	l.mu.Lock()
	b := l.bucket(bk, lim, now)
	if l.shared == nil {
		r := b.local.ReserveN(now, int(n))
		delay := r.DelayFrom(now)
		if delay > 0 {
			r.CancelAt(now)
		}
		l.mu.Unlock()
		if delay > 0 {
			return l.refuse(name, delay)
		}
		return nil
	}
	if now.Before(b.blockedUntil) {
		wait := b.blockedUntil.Sub(now)
		l.mu.Unlock()
		return l.refuse(name, wait)
	}
	if now.Before(b.leaseUntil) && b.leased >= n {
		b.leased -= n
		l.mu.Unlock()
		return nil
	}
	l.mu.Unlock()

	granted, left, err := l.shared.TakeTokens(ctx, string(name)+sharedKeySplit+key, lim.rate(), lim.Burst, n, max(n, lim.lease()))
	if err != nil {
		return fmt.Errorf("rate limit %s: %w", name, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if granted < n {
		wait := time.Duration((n - left) / lim.rate() * float64(time.Second))
		b.blockedUntil = now.Add(wait)
		return l.refuse(name, wait)
	}
	if !now.Before(b.leaseUntil) {
		b.leased = 0
	}
	b.leased += granted - n
	b.leaseUntil = now.Add(leaseTTL)
	return nil
}

func (l *Limiter) refuse(name Name, wait time.Duration) error {
	l.refused[name].Add(1)
	return &Refused{Limit: name, RetryAfter: wait}
}

// minSweep is the fewest buckets kept before idle ones are looked for.
const minSweep = 4096

// bucket returns bk's bucket, creating it; l.mu is held.
func (l *Limiter) bucket(bk bucketKey, lim Limit, now time.Time) *bucket {
	b := l.buckets[bk]
	if b == nil {
		if len(l.buckets) >= l.nextSweep {
			l.sweep(now)
			l.nextSweep = max(minSweep, 2*len(l.buckets))
		}
		b = &bucket{}
		if l.shared == nil {
			b.local = rate.NewLimiter(rate.Limit(lim.rate()), int(lim.Burst))
		}
		l.buckets[bk] = b
	}
	b.used = now
	return b
}

// sweep forgets the buckets that no longer say anything: full again (local)
// or with no lease and no refusal in force (shared). l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	for bk, b := range l.buckets {
		lim := l.limits[bk.name]
		idle := now.Sub(b.used)
		if b.local != nil && idle >= lim.Per || b.local == nil && !now.Before(b.leaseUntil) && !now.Before(b.blockedUntil) {
			delete(l.buckets, bk)
		}
	}
}

// Reserved reports whether key's bucket of name refuses right now without
// taking anything: for limits charged only on failure (failed
// authentications), checked before the work they protect. It never asks the
// shared store.
func (l *Limiter) Reserved(name Name, key string) error {
	if l == nil {
		return nil
	}
	lim, ok := l.limits[name]
	if !ok {
		return nil
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[bucketKey{name, key}]
	if b == nil {
		return nil
	}
	if b.local != nil {
		if b.local.TokensAt(now) < 1 {
			return l.refuse(name, time.Duration((1-b.local.TokensAt(now))/lim.rate()*float64(time.Second)))
		}
		return nil
	}
	if now.Before(b.blockedUntil) {
		return l.refuse(name, b.blockedUntil.Sub(now))
	}
	return nil
}

// IPKey is the bucket key of a client address: the address itself for
// IPv4, its /64 for IPv6 (one subscriber is routinely handed a whole /64).
func IPKey(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
