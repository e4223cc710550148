package testwait

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// recorder is a testing.TB that records a failure instead of ending the
// test, so that Until's own failure can be checked.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}

// Fatalf records the message and ends the calling goroutine, as
// testing.T's does.
func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestUntilReturnsOnceTrue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int32
		start := time.Now()
		Until(t, "the third check", func() bool { return n.Add(1) == 3 })
		if n.Load() != 3 {
			t.Fatalf("checked %d times, want 3", n.Load())
		}
		// 1 ms, then 2 ms: the pauses grow.
		if took := time.Since(start); took != 3*time.Millisecond {
			t.Fatalf("took %v, want 3ms", took)
		}
	})
}

func TestUntilChecksAtOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		Until(t, "true", func() bool { return true })
		if took := time.Since(start); took != 0 {
			t.Fatalf("a true condition took %v", took)
		}
	})
}

func TestWithinFailsNamingTheState(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := &recorder{TB: t}
		var checks atomic.Int32
		start := time.Now()
		done := make(chan struct{})
		go func() {
			defer close(done)
			Within(r, time.Second, "bob's inbox interest", func() bool { checks.Add(1); return false })
		}()
		<-done
		if !strings.Contains(r.failed, "bob's inbox interest") || !strings.Contains(r.failed, "1s") {
			t.Fatalf("failure %q does not name the state and the bound", r.failed)
		}
		took := time.Since(start)
		if took < time.Second || took > time.Second+maxPause {
			t.Fatalf("gave up after %v, want just past 1s", took)
		}
		// Pauses of at most 50 ms: about 20 checks a second, not one.
		if n := checks.Load(); n < 20 {
			t.Fatalf("checked %d times in 1s", n)
		}
	})
}
