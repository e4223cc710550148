package chat

import (
	"context"
	"time"

	"github.com/kez-chat/kezd/store"
)

// MaxPollWait is the longest a long-poll may wait.
const MaxPollWait = 30 * time.Second

// Live is the broker side of the read path. PLACEHOLDER: the live-delivery
// work replaces this with the real subscription interface.
type Live interface{}

// EventKind says what an Event carries.
type EventKind int

// The kinds of stream events.
const (
	EventMessage EventKind = iota // a stored message; id: <seq>
	EventReady                    // the backlog has been sent; data {"latest":n}
	EventReset                    // messages before Oldest were deleted; data {"oldest":n}
)

// Event is one item of an inbox stream.
type Event struct {
	Kind    EventKind
	Message store.Message // EventMessage
	Latest  int64         // EventReady
	Oldest  int64         // EventReset
}

// Cursor is where a stream starts: after Seq, or, when Now is set, after the
// highest seq stored when the stream is set up.
type Cursor struct {
	Seq int64
	Now bool
}

// Follow streams handle's inbox to emit: the backlog after cursor, one ready
// event, then live messages, each exactly once and in seq order. It returns
// when ctx ends (nil), when emit fails (that error), or when the stream must
// end (for instance a reader too slow to keep up).
//
// PLACEHOLDER: backlog and ready only; the live-delivery work completes it.
func (s *Service) Follow(ctx context.Context, handle string, cursor Cursor, emit func(Event) error) error {
	last := cursor.Seq
	if cursor.Now {
		seq, err := s.store.LatestSeq(ctx, handle)
		if err != nil {
			return storeError("latest seq", err)
		}
		last = seq
	}
	for {
		ms, err := s.List(ctx, handle, last, MaxPollLimit)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := emit(Event{Kind: EventMessage, Message: m}); err != nil {
				return err
			}
			last = m.Seq
		}
		if len(ms) < MaxPollLimit {
			break
		}
	}
	if err := emit(Event{Kind: EventReady, Latest: last}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// Poll is List that, when nothing is there and wait > 0, waits up to wait
// (at most MaxPollWait) for a message to arrive.
//
// PLACEHOLDER: does not wait yet; the live-delivery work completes it.
func (s *Service) Poll(ctx context.Context, handle string, since int64, limit int, wait time.Duration) ([]store.Message, error) {
	return s.List(ctx, handle, since, limit)
}
