package chat

import (
	"cmp"
	"context"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// Live is the broker side of the read path (broker.Broker implements it).
type Live interface {
	// Subscribe calls deliver with every message published for handle from
	// the moment it returns until cancel is called, and resync whenever
	// messages may have been missed (after a broker reconnect). Both are
	// called from the broker's own goroutines (deliver from its dispatcher,
	// resync from its connection's callbacks) and must not block; deliver
	// must not modify the message, whose JSON is shared by every stream of
	// the handle and written out as it is.
	Subscribe(ctx context.Context, handle string, deliver func(protocol.Encoded), resync func()) (cancel func(), err error)
	// AnnounceRevocation tells every instance, this one included, that a
	// handle's keys changed or that it was deleted (see Revoked).
	AnnounceRevocation(ctx context.Context, rev Revocation) error
}

// Stream memory.
//
// A slow reader never makes a stream buffer without bound. What a stream
// holds is bounded by bytes of envelopes, not by a count of messages that
// may each be 64 KiB: its live queue holds at most liveBuffer messages and
// StreamPageBytes of envelopes (beyond either the stream drops the queue
// and reads the store instead, which is what the client would do on
// reconnecting), and it reads the store a page at a time, each page at most
// StreamPageBytes (always at least one message).
//
// Catch-up pages also come out of one budget for the whole process
// (CatchUpBudget): a stream takes a page's worth before it reads the store
// and gives it back message by message as it writes them. A stream that
// cannot get its page within CatchUpWait ends with ErrBusy; the client
// resumes from its Last-Event-ID, so a burst of reconnecting clients
// catches up in turns rather than all at once.
//
// A reader too slow to drain a page within DrainTimeout is ended: the
// page's events carry that deadline, and the writer fails a write it cannot
// finish by then. The client reconnects with Last-Event-ID and loses
// nothing; meanwhile it holds no budget. A reader whose connection stops
// taking writes altogether is ended by the writer's own write deadline.
const (
	// DefaultStreamPageBytes bounds one stream's page and live queue: 4
	// of the largest envelopes, or a few thousand ordinary chat messages.
	DefaultStreamPageBytes = 256 << 10
	// DefaultCatchUpBudget lets 256 streams catch up at once with full
	// pages, far more than a restart's reconnects need at a time (each
	// page takes milliseconds to write to a reader that keeps up).
	DefaultCatchUpBudget = 64 << 20
	// DefaultCatchUpWait is how long a stream waits for budget.
	DefaultCatchUpWait = 10 * time.Second
	// DefaultDrainTimeout: a full page in 10 s is about 26 KB/s (200
	// kbit/s). A slower reader still makes progress across reconnects.
	DefaultDrainTimeout = 10 * time.Second
	// DefaultPollPageBytes bounds one poll answer: 16 of the largest
	// envelopes. The client polls again from next.
	DefaultPollPageBytes = 1 << 20

	// liveBuffer bounds the live messages a stream holds while its reader is
	// busy. Beyond it the stream drops them and catches up from the store.
	liveBuffer = 64
	// catchUpPage is the most messages a stream reads from the store at a
	// time, however small.
	catchUpPage = 100
	// fallbackPoll is how often a stream without a broker (Live is nil)
	// looks at the store.
	fallbackPoll = time.Second
)

// ErrBusy ends a stream that waited CatchUpWait for the catch-up budget.
var ErrBusy = &Error{Code: protocol.CodeUnavailable, Message: "the server is busy catching streams up; resume later"}

// DefaultRecheck and DefaultRecheckEvery schedule a stream's safety-net
// reads of the store. In a NATS cluster a new subscription's interest
// reaches the other servers over the routes a moment after Subscribe
// returns; a message published on another instance inside that window
// would otherwise wait for the next message (a gap fill) or a reconnect.
// One read shortly after setup closes the window; the slow periodic one
// bounds the delay of anything else the broker might lose. Jitter keeps
// many streams from reading at once.
const (
	DefaultRecheck      = time.Second
	DefaultRecheckEvery = 60 * time.Second
)

// immediateInterest is implemented by a Live that can say its subscriptions
// reach every publisher at once (one NATS server; broker.Broker).
type immediateInterest interface{ InterestImmediate() bool }

// firstRecheck is the delay of a new stream's first safety-net read: the
// configured Recheck; by default DefaultRecheck, there to close a cluster's
// interest window, or the periodic delay when the broker has no such
// window (one server), which saves every stream open a store read.
func (s *Service) firstRecheck() time.Duration {
	if !s.recheckSet {
		if l, ok := s.live.(immediateInterest); ok && l.InterestImmediate() {
			return s.recheckAfter()
		}
	}
	return s.recheck
}

// recheckAfter returns the delay before the next periodic safety-net read.
func (s *Service) recheckAfter() time.Duration {
	return s.recheckEvery*4/5 + rand.N(s.recheckEvery*2/5+1)
}

// EventKind says what an Event carries.
type EventKind int

// The kinds of stream events.
const (
	EventMessage EventKind = iota // a stored message; id: <seq>
	EventReady                    // the backlog has been sent; data {"latest":n}
	EventReset                    // messages before Oldest were deleted; data {"oldest":n}
	// EventFlush says nothing more is queued: the stream is about to wait.
	// A writer may hold the events before it back and write them all at
	// once now (one write for a burst). It is not an SSE event; it comes
	// only after at least one other event.
	EventFlush
)

// Event is one item of an inbox stream.
type Event struct {
	Kind    EventKind
	Message protocol.Encoded // EventMessage: the stored message, encoded once for every stream
	Latest  int64            // EventReady
	Oldest  int64            // EventReset
	// Deadline, when set, is when the event must have been written: the
	// stream's reader is too slow otherwise, and the writer ends the
	// stream (failing the write) rather than keep holding the page.
	Deadline time.Time
}

// Cursor is where a stream starts: after Seq, or, when Now is set, after the
// highest seq stored when the stream is set up.
type Cursor struct {
	Seq int64
	Now bool
}

// Follow streams handle's inbox to emit: the backlog after cursor, one ready
// event, then live messages, each exactly once and in seq order, with an
// EventFlush after each burst, before it waits for more. A cursor
// beyond the latest stored seq is read as that seq (and ready reports it). A
// reset event precedes the first message after a run of seqs past the cursor
// that were deleted before this stream sent them. It returns nil when ctx
// ends and emit's error when emit fails; other errors are *Error
// (unavailable when the store or the broker is). Every end leaves the client
// able to resume from the last message it received.
//
// The store is the truth and the broker only a wake-up: the stream subscribes
// before it reads the backlog, drops what it already sent, fills any gap
// from the store before a message that skips ahead (normal with several
// instances), and reads the store again after a broker reconnect or an
// overflow. It also reads the store a second after setup and about once a
// minute after that (see DefaultRecheck). Without a broker (Live nil) it reads
// the store every second.
//
// owner is the authenticated handle, with the signing key that opened the
// stream. When that key is revoked (a rotation or a deletion, announced by
// any instance, or found at a periodic check of the store) the stream ends
// and Follow returns the *Error the key would get now.
func (s *Service) Follow(ctx context.Context, owner store.Handle, cursor Cursor, emit func(Event) error) error {
	if err := identity.ValidateHandle(owner.Handle); err != nil {
		return Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	ctx, end, err := s.openSession(ctx, owner)
	if err != nil {
		return err
	}
	defer end()
	return sessionEnd(ctx, s.follow(ctx, owner, cursor, emit))
}

func (s *Service) follow(ctx context.Context, owner store.Handle, cursor Cursor, emit func(Event) error) error {
	handle := owner.Handle
	w, err := s.watch(ctx, handle)
	if err != nil {
		return endErr(ctx, err)
	}
	defer w.stop()
	q, tick, rearm := w.q, w.tick, w.rearm
	// Every event is followed, before Follow waits, by one EventFlush.
	held := false
	flushed := emit
	emit = func(ev Event) error {
		held = true
		return flushed(ev)
	}

	// A cursor beyond the newest stored message is read as that message:
	// taken as given, it would make the stream skip every message stored
	// after it up to the cursor. The client's own cursor still counts as
	// seen when deciding whether a gap was a deletion it must hear about
	// (an inbox whose messages have all been deleted has latest 0).
	latest, err := s.store.LatestSeq(ctx, handle)
	if err != nil {
		return endErr(ctx, s.storeError("latest seq", err))
	}
	seen := cursor.Seq
	last := min(cursor.Seq, latest)
	if cursor.Now {
		// Nothing to read: the subscription came first, so whatever is
		// stored after latest is published after it and arrives live (or
		// at the recheck, like anything the broker loses).
		seen, last = latest, latest
	} else if last, err = s.catchUp(ctx, handle, last, seen, emit); err != nil {
		return endErr(ctx, err)
	}
	if err := emit(Event{Kind: EventReady, Latest: last}); err != nil {
		return err
	}

	for {
		if held {
			held = false
			if err := flushed(Event{Kind: EventFlush}); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			if err := s.checkKey(ctx, owner); err != nil {
				return err
			}
			if last, err = s.catchUp(ctx, handle, last, seen, emit); err != nil {
				return endErr(ctx, err)
			}
			rearm()
			continue
		case <-q.wake:
		}
		msgs, resync, lagged := q.take()
		if resync || lagged {
			if last, err = s.catchUp(ctx, handle, last, seen, emit); err != nil {
				return endErr(ctx, err)
			}
		}
		// The messages of one group commit are published by as many
		// senders at once and reach NATS in any order; in seq order, those
		// queued together need no gap fill.
		slices.SortFunc(msgs, func(a, b protocol.Encoded) int { return cmp.Compare(a.Seq, b.Seq) })
		for _, m := range msgs {
			if m.Seq <= last {
				continue
			}
			if m.Seq > last+1 {
				// A gap: the missing messages are stored, published by
				// another instance and not here yet, or deleted (then
				// catchUp sends a reset). The store has m too.
				if last, err = s.catchUp(ctx, handle, last, seen, emit); err != nil {
					return endErr(ctx, err)
				}
				if m.Seq <= last {
					continue
				}
			}
			if err := emit(Event{Kind: EventMessage, Message: m}); err != nil {
				return err
			}
			last = m.Seq
		}
	}
}

// catchUp emits every stored message after last, a page at a time, and
// returns the seq of the last one emitted (or last). seen is the client's
// cursor: it has every message up to there.
//
// Within one recipient seqs are committed in order (Postgres holds the
// recipient's counter row until commit; SQLite has one writer), so a listing
// never skips a message that is merely not committed yet: a gap after last
// means the messages in it were deleted. The client hears that as a reset,
// naming the oldest message kept, before that message.
func (s *Service) catchUp(ctx context.Context, handle string, last, seen int64, emit func(Event) error) (int64, error) {
	for {
		more, err := s.catchUpPage(ctx, handle, &last, seen, emit)
		if err != nil || !more {
			return last, err
		}
	}
}

// catchUpPage emits one page of catch-up, held under the budget, and
// reports whether there may be more after it.
func (s *Service) catchUpPage(ctx context.Context, handle string, last *int64, seen int64, emit func(Event) error) (more bool, err error) {
	wait, cancel := context.WithTimeout(ctx, s.catchUpWait)
	err = s.budget.Acquire(wait, int64(s.pageBytes))
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		s.streamsBusy.Add(1)
		return false, ErrBusy
	}
	held := int64(s.pageBytes)
	defer func() { s.budget.Release(held) }()

	ms, err := s.list(ctx, handle, *last, catchUpPage, s.pageBytes)
	if err != nil {
		return false, err
	}
	size := int64(0)
	for _, m := range ms {
		size += int64(len(m.Envelope))
	}
	s.budget.Release(held - size)
	held = size
	// The page is done when it stopped short of both bounds: any message
	// after it would have fitted.
	more = len(ms) == catchUpPage || size+protocol.MaxEnvelope > int64(s.pageBytes)

	deadline := time.Now().Add(s.drainTimeout)
	for i := range ms {
		m := ms[i]
		ms[i] = store.Message{} // written: the page no longer holds it
		if m.Seq <= *last {
			continue
		}
		if m.Seq > max(*last, seen)+1 {
			if err := emit(Event{Kind: EventReset, Oldest: m.Seq, Deadline: deadline}); err != nil {
				return false, err
			}
		}
		if err := emit(Event{Kind: EventMessage, Message: protocol.Encode(m), Deadline: deadline}); err != nil {
			return false, err
		}
		*last = m.Seq
		n := int64(len(m.Envelope))
		s.budget.Release(n)
		held -= n
	}
	return more && len(ms) > 0, nil
}

// endErr turns a failure caused by the stream's own context ending into the
// clean end (nil) that Follow promises.
func endErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Poll is List that, when nothing is there and wait > 0, waits up to wait
// (at most protocol.MaxPollWait) for a message to arrive, then lists again. It returns
// an empty list at the deadline, and when ctx ends.
//
// owner is the authenticated handle with the key that signed the poll; a
// waiting poll ends, with the *Error that key would get now, when it is
// revoked.
func (s *Service) Poll(ctx context.Context, owner store.Handle, since int64, limit int, wait time.Duration) ([]store.Message, error) {
	wait = min(wait, protocol.MaxPollWait)
	if wait <= 0 {
		return s.List(ctx, owner.Handle, since, limit)
	}
	if err := identity.ValidateHandle(owner.Handle); err != nil {
		return nil, Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	ctx, end, err := s.openSession(ctx, owner)
	if err != nil {
		return nil, err
	}
	defer end()
	ms, err := s.poll(ctx, owner, since, limit, wait)
	if err := sessionEnd(ctx, nil); err != nil {
		return nil, err
	}
	return ms, err
}

func (s *Service) poll(ctx context.Context, owner store.Handle, since int64, limit int, wait time.Duration) ([]store.Message, error) {
	handle := owner.Handle
	w, err := s.watch(ctx, handle)
	if err != nil {
		if ctx.Err() != nil {
			return []store.Message{}, nil
		}
		return nil, err
	}
	defer w.stop()
	q, tick := w.q, w.tick // one recheck is enough for a poll: never rearmed
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		ms, err := s.List(ctx, handle, since, limit)
		if ctx.Err() != nil {
			return []store.Message{}, nil
		}
		if err != nil || len(ms) > 0 {
			return ms, err
		}
		for again := false; !again; {
			select {
			case <-ctx.Done():
				return []store.Message{}, nil
			case <-deadline.C:
				return []store.Message{}, nil
			case <-tick:
				if err := s.checkKey(ctx, owner); err != nil {
					return nil, err
				}
				again = true
			case <-q.wake:
				msgs, resync, lagged := q.take()
				again = resync || lagged
				for _, m := range msgs {
					again = again || m.Seq > since
				}
			}
		}
	}
}

// watch is a handle's live feed for one stream or long-poll: the queue the
// broker fills, and tick, which fires when the store should be read anyway
// (the safety-net recheck with a broker, polling without one). rearm
// schedules the next periodic recheck; stop ends the feed.
type watch struct {
	q     *liveQueue
	tick  <-chan time.Time
	rearm func()
	stop  func()
}

func (s *Service) watch(ctx context.Context, handle string) (*watch, error) {
	w := &watch{q: newLiveQueue(s.pageBytes), rearm: func() {}}
	if s.live == nil {
		t := time.NewTicker(fallbackPoll)
		w.tick, w.stop = t.C, t.Stop
		return w, nil
	}
	cancel, err := s.live.Subscribe(ctx, handle, w.q.deliver, w.q.resync)
	if err != nil {
		return nil, &Error{Code: protocol.CodeUnavailable, Message: "live delivery is unavailable; retry later", Err: err}
	}
	recheck := time.NewTimer(s.firstRecheck())
	w.tick = recheck.C
	w.rearm = func() { recheck.Reset(s.recheckAfter()) }
	w.stop = func() { recheck.Stop(); cancel() }
	return w, nil
}

// liveQueue is one stream's bounded buffer between the broker's dispatcher
// and the stream's goroutine. It holds no memory while the stream is idle.
type liveQueue struct {
	wake chan struct{} // capacity 1: "look at the queue"

	maxBytes int

	mu         sync.Mutex
	msgs       []protocol.Encoded
	bytes      int // JSON bytes in msgs
	needResync bool
	lagged     bool
}

func newLiveQueue(maxBytes int) *liveQueue {
	return &liveQueue{wake: make(chan struct{}, 1), maxBytes: maxBytes}
}

// deliver queues m, or on overflow (liveBuffer messages, or maxBytes of
// encoded messages, with at least one message queued) forgets the queue and marks
// the stream lagged: it will read the store instead. It never blocks.
func (q *liveQueue) deliver(m protocol.Encoded) {
	q.mu.Lock()
	switch {
	case q.lagged:
	case len(q.msgs) >= liveBuffer || (len(q.msgs) > 0 && q.bytes+len(m.JSON) > q.maxBytes):
		q.msgs, q.bytes, q.lagged = nil, 0, true
	default:
		q.msgs = append(q.msgs, m)
		q.bytes += len(m.JSON)
	}
	q.mu.Unlock()
	q.signal()
}

func (q *liveQueue) resync() {
	q.mu.Lock()
	q.needResync = true
	q.mu.Unlock()
	q.signal()
}

func (q *liveQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take empties the queue.
func (q *liveQueue) take() (msgs []protocol.Encoded, resync, lagged bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	msgs, resync, lagged = q.msgs, q.needResync, q.lagged
	q.msgs, q.bytes, q.needResync, q.lagged = nil, 0, false, false
	return msgs, resync, lagged
}
