package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
)

// Responder answers requests on one subject as a member of a queue group,
// so that of any number of kezd instances exactly one handles each request.
// It runs at most a fixed number of handlers at once: while all are busy
// the subscription's dispatch blocks, so a burst waits in the client's
// bounded pending buffer, not in goroutines.
type Responder struct {
	sub    *nats.Subscription
	sem    chan struct{}
	handle func(ctx context.Context, m *nats.Msg)
	ctx    context.Context // the start context's values, never cancelled

	mu      sync.Mutex
	stopped bool
	wg      sync.WaitGroup
}

// Respond subscribes handle to subject in queue group queue on nc and calls
// it for every request, at most workers at a time. ctx gives the handlers'
// context its values only, not its end: a responder answers until it is
// stopped, and Stop waits for the requests it has taken, so that an
// instance shutting down still answers what its queue group sends it.
// Handlers bound their own work. Respond returns once the server has the
// subscription.
func Respond(ctx context.Context, nc *nats.Conn, subject, queue string, workers int, handle func(ctx context.Context, m *nats.Msg)) (*Responder, error) {
	if workers <= 0 {
		return nil, errors.New("respond: workers must be positive")
	}
	r := &Responder{sem: make(chan struct{}, workers), handle: handle}
	r.ctx = context.WithoutCancel(ctx)
	var err error
	r.sub, err = nc.QueueSubscribe(subject, queue, r.dispatch)
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	if err := nc.Flush(); err != nil {
		r.Stop()
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return r, nil
}

func (r *Responder) dispatch(m *nats.Msg) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return
	}
	r.wg.Add(1)
	r.mu.Unlock()
	// Blocks while every worker is busy; Stop waits for them, so this ends.
	r.sem <- struct{}{}
	go func() {
		defer r.wg.Done()
		defer func() { <-r.sem }()
		r.handle(r.ctx, m)
	}()
}

// Stop stops taking requests and waits for the handlers in flight to
// finish: a request being handled gets its answer.
func (r *Responder) Stop() {
	// An error means the connection is closed: the subscription is gone.
	_ = r.sub.Unsubscribe()
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.wg.Wait()
}
