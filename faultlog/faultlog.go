// Package faultlog logs a failing dependency the way an operator wants to
// read it during an outage: the first failure once, then at most one summary
// with a count every interval while it lasts, then its recovery. The
// failures themselves go at debug level.
package faultlog

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultEvery is the summary interval when New is given 0.
const DefaultEvery = 10 * time.Second

// Log tracks the state of named dependencies. It is safe for concurrent use.
type Log struct {
	log   *slog.Logger
	every time.Duration
	now   func() time.Time

	mu      sync.Mutex
	faults  map[string]*fault
	failing atomic.Int32 // len(faults), read without the lock by OK
}

type fault struct {
	since, reported time.Time
	count, unrep    int64
}

// New returns a Log writing to log, summarising every interval (0 means
// DefaultEvery).
func New(log *slog.Logger, every time.Duration) *Log {
	if every <= 0 {
		every = DefaultEvery
	}
	return &Log{log: log, every: every, now: time.Now, faults: map[string]*fault{}}
}

// Fail records one failure of what. The first of a run is logged at warn
// level; later ones are counted into a summary at most every interval.
func (l *Log) Fail(what string, err error) {
	now := l.now()
	l.mu.Lock()
	f, failing := l.faults[what]
	if !failing {
		f = &fault{since: now, reported: now, count: 1}
		l.faults[what] = f
		l.failing.Add(1)
		l.mu.Unlock()
		l.log.Warn(what+" failing", "err", err)
		return
	}
	f.count++
	f.unrep++
	if now.Sub(f.reported) < l.every {
		l.mu.Unlock()
		l.log.Debug(what+" failed", "err", err)
		return
	}
	n, total, since := f.unrep, f.count, f.since
	f.unrep, f.reported = 0, now
	l.mu.Unlock()
	l.log.Warn(what+" still failing", "failures", n, "failures_total", total,
		"for", now.Sub(since).Round(time.Millisecond), "err", err)
}

// OK records a success of what, and logs the recovery if it was failing.
func (l *Log) OK(what string) {
	if l.failing.Load() == 0 {
		return // the common case: nothing to recover from
	}
	l.mu.Lock()
	f, failing := l.faults[what]
	if !failing {
		l.mu.Unlock()
		return
	}
	delete(l.faults, what)
	l.failing.Add(-1)
	l.mu.Unlock()
	l.log.Info(what+" recovered", "failures_total", f.count,
		"after", l.now().Sub(f.since).Round(time.Millisecond))
}
