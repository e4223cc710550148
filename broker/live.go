package broker

import (
	"context"

	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kez-chat/kezd/faultlog"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/nats-io/nats.go"
)

// Live fan-out: one NATS subscription per (instance, handle), shared by all of
// that handle's streams on this instance and reference-counted, feeding one
// dispatcher goroutine through a single channel.
//
// Why not one NATS subscription per stream: bench_test.go measures both
// (embedded server, in-process connection; the figures of the last run are
// in docs/benchmarks.md, "Fan-out architecture"):
//   - Opening a stream for a handle that already has one here takes no NATS
//     traffic and about a fiftieth of the time of a subscription of its own
//     (a SUB/PING round trip, and route interest updates in a cluster); the
//     first stream of a handle costs the same either way.
//   - One message to a handle with 100 streams is one server delivery and
//     one check of the message, then 100 queue appends: 20 to 30 times less
//     than 100 server deliveries and checks. With one stream both cost the
//     same.
//   - An idle stream holds about half the memory (the hub's listener, plus
//     one server and client subscription per handle).
// Devices and tabs of one person, and a reconnecting client overlapping its
// old stream, make several streams per handle common, so sharing is worth
// the reference count.
//
// Why not one kez.chat.inbox.* per instance: every instance would receive and
// decode every message of the deployment, whether or not anyone here listens;
// per-handle interest lets NATS route a message only to the instances that
// have a stream for its recipient.

// dispatchBuffer is the shared channel's capacity. The dispatcher never
// blocks (listeners only enqueue), so it only fills if this process cannot
// keep up at all; then NATS drops and the hub resyncs the handle's streams.
const dispatchBuffer = 8192

// hub fans messages of the broker's per-handle subscriptions out to listeners.
type hub struct {
	log    *slog.Logger
	nc     *nats.Conn
	ch     chan *nats.Msg
	macKey []byte // nil: no MAC is checked

	faults   *faultlog.Log
	rejected atomic.Int64

	mu      sync.Mutex
	handles map[string]*handleSub
	nextID  uint64

	stopOnce sync.Once
	done     chan struct{} // closed to stop the dispatcher
	wg       sync.WaitGroup
}

// handleSub is one NATS subscription and the listeners sharing it.
type handleSub struct {
	sub       *nats.Subscription
	ready     chan struct{} // closed once the server has the subscription
	err       error         // set before ready is closed when subscribing failed
	listeners map[uint64]listener
}

type listener struct {
	deliver func(protocol.Encoded)
	resync  func()
}

func newHub(log *slog.Logger, macKey []byte) *hub {
	return &hub{
		log:     log,
		macKey:  macKey,
		faults:  faultlog.New(log, 0),
		ch:      make(chan *nats.Msg, dispatchBuffer),
		handles: make(map[string]*handleSub),
		done:    make(chan struct{}),
	}
}

func (h *hub) start(nc *nats.Conn) error {
	h.nc = nc
	h.wg.Go(h.dispatch)
	return nil
}

func (h *hub) stop() {
	h.stopOnce.Do(func() { close(h.done) })
	h.wg.Wait()
}

// Subscribe calls deliver with every message published for handle from the
// moment it returns until cancel is called, and resync whenever messages may
// have been missed (the connection came back, or NATS dropped messages).
// deliver runs on the broker's dispatcher, resync on the NATS connection's
// callback goroutine: neither may block. Messages for one
// handle are delivered in the order NATS delivers them; deliver must treat
// the message as read-only (its envelope is shared between streams).
//
// When Subscribe returns, this instance's server has the subscription, so a
// message published through it afterwards is delivered, or covered by a
// resync. Other servers of a cluster learn of it over the routes a moment
// later (a route round trip); a message published on one of them within
// that moment reaches the stream only with the next message (as a gap fill)
// or at its next resync.
func (b *Broker) Subscribe(ctx context.Context, handle string, deliver func(protocol.Encoded), resync func()) (cancel func(), err error) {
	return b.hub.subscribe(ctx, handle, listener{deliver: deliver, resync: resync})
}

func (h *hub) subscribe(ctx context.Context, handle string, l listener) (func(), error) {
	if err := identity.ValidateHandle(handle); err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	h.mu.Lock()
	hs, ok := h.handles[handle]
	first := !ok
	if first {
		hs = &handleSub{ready: make(chan struct{}), listeners: make(map[uint64]listener)}
		h.handles[handle] = hs
	}
	h.nextID++
	id := h.nextID
	hs.listeners[id] = l
	h.mu.Unlock()

	cancel := func() { h.remove(handle, hs, id) }
	if first {
		hs.err = h.natsSubscribe(handle, hs)
		close(hs.ready)
	}
	select {
	case <-hs.ready:
	case <-ctx.Done():
		cancel()
		return nil, ctx.Err()
	}
	if hs.err != nil {
		cancel()
		return nil, hs.err
	}
	return sync.OnceFunc(cancel), nil
}

// natsSubscribe subscribes for hs and waits until the server has processed
// it. It does not use the caller's context: other streams of the handle wait
// for the same subscription. A flush that fails means the connection is going
// down, and the reconnect resends the subscription and resyncs every listener.
func (h *hub) natsSubscribe(handle string, hs *handleSub) error {
	sub, err := h.nc.ChanSubscribe(protocol.InboxSubject(handle), h.ch)
	if err != nil {
		return fmt.Errorf("subscribe %s: %w", protocol.InboxSubject(handle), err)
	}
	h.mu.Lock()
	hs.sub = sub
	h.mu.Unlock()
	if err := h.nc.FlushTimeout(flushTimeout); err != nil {
		h.log.Debug("nats flush after subscribe failed; the reconnect will resync", "subject", sub.Subject, "err", err)
	}
	return nil
}

// flushTimeout bounds the round trip that confirms a new subscription.
const flushTimeout = 5 * time.Second

// remove drops a listener; the last one of a handle unsubscribes.
func (h *hub) remove(handle string, hs *handleSub, id uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(hs.listeners, id)
	if len(hs.listeners) > 0 || h.handles[handle] != hs {
		return
	}
	delete(h.handles, handle)
	if hs.sub != nil {
		// Unsubscribe only queues an UNSUB; it does not wait for the server.
		if err := hs.sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			h.log.Warn("nats unsubscribe failed", "subject", hs.sub.Subject, "err", err)
		}
	}
}

// dispatch checks each message once and hands it to the handle's
// listeners, as the bytes that were published: nothing decodes it, and
// every stream writes it as it is.
func (h *hub) dispatch() {
	for {
		select {
		case <-h.done:
			return
		case msg := <-h.ch:
			h.deliver(msg)
		}
	}
}

func (h *hub) deliver(msg *nats.Msg) {
	handle := strings.TrimPrefix(msg.Subject, protocol.InboxPrefix)
	m, err := decodeMessage(handle, msg)
	if err == nil && h.macKey != nil {
		err = checkMAC(h.macKey, msg.Subject, m.Seq, msg.Data, msg.Header.Get(protocol.MACHeader))
	}
	if err != nil {
		// Whoever published this is not kezd (or not this version); streams
		// never see it, so it cannot stand in for the real message of its
		// seq either. A real message behind it is caught by the next gap
		// fill. A flood of them is logged as one fault with counts.
		h.rejected.Add(1)
		h.faults.Fail("live inbox messages not from kezd", fmt.Errorf("%s: %w", msg.Subject, err))
		return
	}
	h.mu.Lock()
	hs := h.handles[handle]
	var ls []listener
	if hs != nil {
		ls = make([]listener, 0, len(hs.listeners))
		for _, l := range hs.listeners {
			ls = append(ls, l)
		}
	}
	h.mu.Unlock()
	for _, l := range ls {
		l.deliver(m)
	}
}

// decodeMessage checks a message received on handle's inbox subject: a
// positive seq in the Kez-Seq header and, as data, the stored message JSON
// for handle with that seq, as Publish writes it (protocol.CheckEncoded). The
// data is kept as it is, not decoded.
func decodeMessage(handle string, msg *nats.Msg) (protocol.Encoded, error) {
	hdr := msg.Header.Get(protocol.SeqHeader)
	seq, err := strconv.ParseInt(hdr, 10, 64)
	if err != nil || strconv.FormatInt(seq, 10) != hdr {
		return protocol.Encoded{}, fmt.Errorf("%s %q is not a seq", protocol.SeqHeader, hdr)
	}
	if err := protocol.CheckEncoded(handle, seq, msg.Data); err != nil {
		return protocol.Encoded{}, fmt.Errorf("data: %w", err)
	}
	return protocol.Encoded{Seq: seq, JSON: msg.Data}, nil
}

// resyncAll tells every listener that it may have missed messages.
func (h *hub) resyncAll() {
	h.resyncWhere(func(string) bool { return true })
}

func (h *hub) resyncWhere(match func(handle string) bool) {
	h.mu.Lock()
	var ls []listener
	for handle, hs := range h.handles {
		if !match(handle) {
			continue
		}
		for _, l := range hs.listeners {
			ls = append(ls, l)
		}
	}
	h.mu.Unlock()
	for _, l := range ls {
		l.resync()
	}
}

// asyncError is the connection's error handler. A slow-consumer error means
// NATS dropped messages for a subscription: its streams resync.
func (h *hub) asyncError(_ *nats.Conn, sub *nats.Subscription, err error) {
	if errors.Is(err, nats.ErrSlowConsumer) && sub != nil {
		h.log.Warn("nats dropped messages; resyncing streams", "subject", sub.Subject)
		handle := strings.TrimPrefix(sub.Subject, protocol.InboxPrefix)
		h.resyncWhere(func(hd string) bool { return hd == handle })
		return
	}
	subject := ""
	if sub != nil {
		subject = sub.Subject
	}
	h.log.Warn("nats error", "subject", subject, "err", err)
}

// subscriptions counts the handles with a NATS subscription (for tests).
func (h *hub) subscriptions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.handles)
}
