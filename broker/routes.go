package broker

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/kez-chat/kezd/faultlog"
)

// routeRefusedFor is how long a refused route keeps /readyz failing.
const routeRefusedFor = 30 * time.Second

// ErrRoutesRefused is RoutesRefused's error.
var ErrRoutesRefused = errors.New("nats routes refused (Authorization Violation): the instances do not share the deployment's NATS keys or route credentials, so live delivery between them falls back to the store's slow safety net")

// routeWatch turns the embedded server's route log lines into one clear
// kezd line per kind of trouble (then summaries, then recovery) and a
// readiness signal.
type routeWatch struct {
	faults    *faultlog.Log
	refusedAt atomic.Int64 // Unix nanoseconds of the last refusal; 0 for none
	now       func() time.Time
}

func newRouteWatch(log *slog.Logger) *routeWatch {
	return &routeWatch{faults: faultlog.New(log, 0), now: time.Now}
}

// The methods do nothing on a nil watch (a logger without one).

func (w *routeWatch) refused() {
	if w == nil {
		return
	}
	w.refusedAt.Store(w.now().UnixNano())
	w.faults.Fail("nats route", ErrRoutesRefused)
}

func (w *routeWatch) dialFailed(msg string) {
	if w == nil {
		return
	}
	w.faults.Fail("nats route dial", errors.New(msg))
}

func (w *routeWatch) connected() {
	if w == nil {
		return
	}
	w.faults.OK("nats route dial")
}

// RoutesRefused reports, for /readyz, whether a route to or from this
// instance's embedded server was refused in the last 30 s. In external mode
// it is always nil (the servers are the operator's).
func (b *Broker) RoutesRefused(context.Context) error {
	if b.routes == nil {
		return nil
	}
	at := b.routes.refusedAt.Load()
	if at != 0 && b.routes.now().Sub(time.Unix(0, at)) < routeRefusedFor {
		return ErrRoutesRefused
	}
	return nil
}
