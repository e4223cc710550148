// Package testwait waits, in tests, for state that announces nothing: a
// route between two NATS servers, interest in a subject, a count a server
// keeps. Where there is an event (a channel, a callback, a log line), a test
// waits on that instead; this is the fallback, checked at a growing pause
// and bounded, so a state that never comes fails the test by name rather
// than hanging it.
package testwait

import (
	"testing"
	"time"
)

// Timeout bounds Until: long enough for a loaded CI machine, short enough
// that a state which never comes fails the test well before `go test`'s
// own timeout.
const Timeout = 30 * time.Second

// maxPause is the longest pause between two checks.
const maxPause = 50 * time.Millisecond

// Until returns once cond reports true, checking it first at once and then
// after pauses growing from 1 ms to 50 ms. If cond is still false after
// Timeout, it fails the test with what, which names the awaited state
// ("bob's inbox interest on server B"). It must be called from the test's
// goroutine; cond may fail the test itself.
func Until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	Within(t, Timeout, what, cond)
}

// Within is Until with a bound of d, for a test whose claim is that the
// state comes soon (a listener closing right after a log line).
func Within(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for pause := time.Millisecond; !cond(); pause = min(2*pause, maxPause) {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %v waiting for %s", d, what)
		}
		<-time.After(pause)
	}
}
