package faultlog

import (
	"log/slog"
	"sync"
	"time"
)

// Summary logs a kind of line that anyone can cause (a refused login, a
// connection that breaks the protocol) at info level at most once every
// Every, with the count of the lines it logged at debug level only since
// the last, under CountKey: a flood of them writes one line per interval.
// Its zero value is not ready: set Every and CountKey. It is safe for
// concurrent use.
type Summary struct {
	Every    time.Duration
	CountKey string

	mu         sync.Mutex
	last       time.Time // of the last line at info
	suppressed int64     // lines since then, logged at debug only
}

// Log logs msg with attrs, at now.
func (s *Summary) Log(log *slog.Logger, now time.Time, msg string, attrs ...any) {
	s.mu.Lock()
	if !s.last.IsZero() && now.Sub(s.last) < s.Every {
		s.suppressed++
		s.mu.Unlock()
		log.Debug(msg, attrs...)
		return
	}
	n := s.suppressed
	s.last, s.suppressed = now, 0
	s.mu.Unlock()
	if n > 0 {
		attrs = append(attrs, s.CountKey, n)
	}
	log.Info(msg, attrs...)
}
