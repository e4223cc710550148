// Package ratelimit owns kezd's rate limits (PROTOCOL.md v1.1 "Rate
// limits"): token buckets keyed by a client IP, a handle or a (sender,
// recipient) pair, that hold for the deployment rather than the instance.
//
// Each bucket's truth is in the shared store (Postgres), but a request does
// not wait for it. An instance spends tokens of a bucket on credit: a lease
// of an eighth of the bucket, the first one given on trust, later ones taken
// from the store. What it spent is reported to the store in the background
// (Run, every FlushEvery, all buckets in one round trip), which also renews
// the credit; a request waits for the store only when its bucket's credit
// here is spent. A refusal is remembered until the bucket will have
// refilled, so a flood costs no queries. So N instances together admit at
// most what the bucket holds plus one lease each on trust (burst·(1+N/8)),
// and then its rate. Without a shared store (SQLite, which is one machine)
// the buckets are this process's golang.org/x/time/rate limiters.
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
	// TakeTokens does each take, in one round trip: it refills the bucket
	// (Burst tokens at most, refilling at Rate per second), subtracts Spent
	// (it may go below zero), then takes between Need and Want tokens from
	// what is left, as many as there are, or none when fewer than Need.
	TakeTokens(ctx context.Context, takes []Take) ([]Grant, error)
}

// Take is one bucket's part of a call to Shared.TakeTokens.
type Take struct {
	Key                            string
	Rate, Burst, Spent, Need, Want float64
}

// Grant is what a Take got: the tokens taken and those left in the bucket.
type Grant struct {
	Granted, Left float64
}

// Request is one bucket's part of a call to Limiter.TakeAll: n tokens of
// limit Name's bucket for Key.
type Request struct {
	Name Name
	Key  string
	N    float64
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

// FlushEvery is how often Run reports spent tokens to the shared store.
const FlushEvery = time.Second

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

	credit       float64   // tokens taken from the store, not yet spent
	trust        float64   // tokens this instance may spend before asking
	spent        float64   // spent on trust, not yet reported to the store
	syncing      bool      // a report of spent is in flight
	blockedUntil time.Time // the shared bucket refuses until then
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
	return l.TakeAll(ctx, Request{Name: name, Key: key, N: n})
}

// TakeAll takes each request's tokens, asking the shared store (once, for
// all of them) only for buckets whose lease here cannot pay; it returns the
// first refusal. Tokens taken for one request are not given back when
// another is refused.
func (l *Limiter) TakeAll(ctx context.Context, reqs ...Request) error {
	if l == nil {
		return nil
	}
	now := l.now()
	var (
		refusal error
		misses  []int // of reqs, for the shared store
		takes   []Take
	)
	l.mu.Lock()
	for i, r := range reqs {
		lim, ok := l.limits[r.Name]
		if !ok {
			continue
		}
		if r.N > lim.Burst {
			// More than the bucket ever holds: retrying cannot help, but
			// every caller's own size limit is below any sane bucket.
			refusal = l.refuse(r.Name, lim.Per)
			break
		}
		b := l.bucket(bucketKey{r.Name, r.Key}, lim, now)
		if l.shared == nil {
			res := b.local.ReserveN(now, int(r.N))
			if delay := res.DelayFrom(now); delay > 0 {
				res.CancelAt(now)
				refusal = l.refuse(r.Name, delay)
				break
			}
			continue
		}
		// Credit first: it is paid for, even in a bucket the store has
		// since refused a take of (concurrent takes may have granted it).
		if b.credit >= r.N {
			b.credit -= r.N
			continue
		}
		if now.Before(b.blockedUntil) {
			refusal = l.refuse(r.Name, b.blockedUntil.Sub(now))
			break
		}
		if b.trust >= r.N {
			b.trust -= r.N
			b.spent += r.N
			continue
		}
		misses = append(misses, i)
		takes = append(takes, Take{Key: sharedKey(r.Name, r.Key), Rate: lim.rate(), Burst: lim.Burst,
			Spent: b.spent, Need: r.N, Want: r.N + lim.lease()})
	}
	if refusal != nil || len(takes) == 0 {
		l.mu.Unlock()
		return refusal
	}
	for _, i := range misses { // reported by the take below; no more trust
		b := l.buckets[bucketKey{reqs[i].Name, reqs[i].Key}]
		b.spent, b.trust = 0, 0
	}
	l.mu.Unlock()

	grants, err := l.shared.TakeTokens(ctx, takes)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		for j, i := range misses { // report it again next time
			l.bucket(bucketKey{reqs[i].Name, reqs[i].Key}, l.limits[reqs[i].Name], now).spent += takes[j].Spent
		}
		return fmt.Errorf("rate limits: %w", err)
	}
	for j, i := range misses {
		r := reqs[i]
		b := l.bucket(bucketKey{r.Name, r.Key}, l.limits[r.Name], now)
		if ok := l.settle(b, l.limits[r.Name], grants[j], r.N, now); !ok && refusal == nil {
			refusal = l.refuse(r.Name, b.blockedUntil.Sub(now))
		}
	}
	return refusal
}

// settle applies the store's answer to a take of need tokens (0 for a
// report): the grant becomes credit, less need, which is paid for; a
// bucket the store left short refuses, once its credit here is spent,
// until it will have refilled. Credit is never given up: the store took
// it from the bucket, for this take or for concurrent ones (whose answers
// may come in any order, the one that reports spending on trust and finds
// the bucket overdrawn among them). It reports whether need was granted.
// l.mu is held.
func (l *Limiter) settle(b *bucket, lim Limit, g Grant, need float64, now time.Time) bool {
	if need > 0 && g.Granted < need || g.Left < 0 {
		b.blockedUntil = now.Add(time.Duration((max(need, 1) - g.Left) / lim.rate() * float64(time.Second)))
		return need == 0 || g.Granted >= need
	}
	b.credit += g.Granted - need
	return true
}

func sharedKey(name Name, key string) string { return string(name) + sharedKeySplit + key }

// Run reports what this instance spent to the shared store every
// FlushEvery, renewing each bucket's credit, until ctx ends; then it
// reports once more. Without a shared store it does nothing.
func (l *Limiter) Run(ctx context.Context) {
	if l == nil || l.shared == nil {
		return
	}
	t := time.NewTicker(FlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = l.Flush(fctx)
			cancel()
			return
		case <-t.C:
			_ = l.Flush(ctx) // what failed is reported next time
		}
	}
}

// Flush reports every bucket's spent tokens to the shared store, in one
// round trip, and tops its credit up to a lease.
func (l *Limiter) Flush(ctx context.Context) error {
	if l == nil || l.shared == nil {
		return nil
	}
	now := l.now()
	type flush struct {
		bk    bucketKey
		spent float64
	}
	var (
		fs    []flush
		takes []Take
	)
	l.mu.Lock()
	for bk, b := range l.buckets {
		if b.spent == 0 || b.syncing {
			continue
		}
		lim := l.limits[bk.name]
		fs = append(fs, flush{bk, b.spent})
		takes = append(takes, Take{Key: sharedKey(bk.name, bk.key), Rate: lim.rate(), Burst: lim.Burst,
			Spent: b.spent, Want: max(0, lim.lease()-b.credit-b.trust)})
		b.spent, b.syncing = 0, true
	}
	l.mu.Unlock()
	if len(takes) == 0 {
		return nil
	}
	grants, err := l.shared.TakeTokens(ctx, takes)
	l.mu.Lock()
	defer l.mu.Unlock()
	for j, f := range fs {
		b := l.buckets[f.bk]
		if b == nil {
			continue // cannot happen: a bucket with spent tokens is not swept
		}
		b.syncing = false
		if err != nil {
			b.spent += f.spent
			continue
		}
		l.settle(b, l.limits[f.bk.name], grants[j], 0, now)
	}
	if err != nil {
		return fmt.Errorf("rate limits: report spent tokens: %w", err)
	}
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
		b = &bucket{trust: lim.lease()} // the first lease is on trust
		if l.shared == nil {
			b.local = rate.NewLimiter(rate.Limit(lim.rate()), int(lim.Burst))
		}
		l.buckets[bk] = b
	}
	b.used = now
	return b
}

// sweep forgets the buckets unused for as long as they take to refill,
// whose spending has been reported. l.mu is held.
func (l *Limiter) sweep(now time.Time) {
	for bk, b := range l.buckets {
		if now.Sub(b.used) >= l.limits[bk.name].Per && b.spent == 0 && !b.syncing && !now.Before(b.blockedUntil) {
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
