package client

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/protocol"
)

// NATSStreamOptions configure StreamNATS.
type NATSStreamOptions struct {
	// Since is the seq to start after: 0 delivers the whole inbox, FromNow
	// only what is published once the subscription is up (the first
	// message published then is the cursor: gaps are filled after it).
	Since int64
	// Recheck is how often the store is read even without a sign of a gap,
	// which bounds the delay of a newest message NATS lost; 0 means
	// DefaultNATSRecheck.
	Recheck time.Duration
	// OnLive, if set, is called once the subscription is on the server:
	// from then on nothing stored for as is missed.
	OnLive func()
	// OnGap, if set, is called when a store read finds that messages after
	// the last one delivered were deleted before they could be (Page.Gap),
	// before the message that follows them.
	OnGap func(Gap)
}

// DefaultNATSRecheck is StreamNATS's safety-net store read interval.
const DefaultNATSRecheck = 60 * time.Second

// natsBuffer bounds the messages queued between NATS and deliver; beyond
// it NATS drops them (a slow consumer), which is a gap the store fills.
const natsBuffer = 4096

// natsTick is how often StreamNATS looks for a reconnect, and retries a
// store read that failed.
const natsTick = 250 * time.Millisecond

// StreamNATS follows as's inbox over nc (logged in as as, see ConnectNATS)
// and calls deliver for each message exactly once and in seq order, like
// Stream does over SSE. NATS alone may repeat a message, deliver seqs out
// of order across kezd instances, and miss what is published while the
// connection is down; so StreamNATS keeps the last seq delivered, drops
// repeats, and reads the store (Poll) to fill a gap: at the start, after
// every reconnect of nc, when a message arrives ahead of the next seq, and
// every Recheck. A store read that fails is retried; messages that arrived
// ahead wait for it. It returns ctx's error when ctx ends, deliver's error
// if it fails, or an *Error the server gave that no retry can fix.
func (c *Client) StreamNATS(ctx context.Context, nc *nats.Conn, as *envelope.Identity, opts NATSStreamOptions, deliver func(Message) error) error {
	msgs := make(chan *nats.Msg, natsBuffer)
	sub, err := nc.ChanSubscribe(protocol.InboxSubject(as.Handle), msgs)
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}
	defer sub.Unsubscribe()
	// The interest is on the server before the first store read, so that
	// nothing stored after that read is missed by both.
	fctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	err = nc.FlushWithContext(fctx)
	cancel()
	if err != nil {
		return fmt.Errorf("nats subscribe: %w", err)
	}

	if opts.OnLive != nil {
		opts.OnLive()
	}
	f := &natsFollower{c: c, as: as, deliver: deliver, onGap: opts.OnGap, last: opts.Since, ahead: map[int64]Message{}}
	recheck := opts.Recheck
	if recheck <= 0 {
		recheck = DefaultNATSRecheck
	}
	tick := time.NewTicker(natsTick)
	defer tick.Stop()
	reconnects := nc.Stats().Reconnects
	nextRecheck := time.Now().Add(recheck)
	needFill := f.last != FromNow
	for {
		if needFill {
			err := f.fill(ctx)
			switch {
			case err == nil:
				needFill = false
				nextRecheck = time.Now().Add(recheck)
			case ctx.Err() != nil:
				return ctx.Err()
			case isDeliverErr(err):
				return err.(errDeliver).err
			case !retryable(err):
				return err
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg := <-msgs:
			gap, err := f.take(msg)
			if err != nil {
				return err.(errDeliver).err
			}
			needFill = needFill || gap
		case <-tick.C:
			if r := nc.Stats().Reconnects; r != reconnects {
				reconnects, needFill = r, true
			}
			if time.Now().After(nextRecheck) {
				needFill = true
			}
		}
	}
}

func isDeliverErr(err error) bool {
	_, ok := err.(errDeliver)
	return ok
}

type natsFollower struct {
	c       *Client
	as      *envelope.Identity
	deliver func(Message) error
	onGap   func(Gap)
	last    int64             // the last seq delivered, or FromNow before the first
	ahead   map[int64]Message // arrived before the next seq; delivered by fill
}

// take handles one NATS message: it delivers it if it is the next seq,
// drops it if it was delivered, and otherwise keeps it and reports a gap.
func (f *natsFollower) take(msg *nats.Msg) (gap bool, err error) {
	var m Message
	if json.Unmarshal(msg.Data, &m) != nil || m.To != f.as.Handle || m.Seq <= 0 {
		return false, nil // not a stored message for this handle
	}
	if h := msg.Header.Get(protocol.SeqHeader); h != "" && h != strconv.FormatInt(m.Seq, 10) {
		return false, nil // header and body disagree: not kezd's
	}
	switch {
	case f.last == FromNow:
		// The first message published since the start: the cursor.
	case m.Seq <= f.last:
		return false, nil // a repeat
	case m.Seq > f.last+1 || len(f.ahead) > 0:
		if len(f.ahead) < natsBuffer {
			f.ahead[m.Seq] = m
		}
		return true, nil
	}
	if err := f.deliver(m); err != nil {
		return false, errDeliver{err}
	}
	f.last = m.Seq
	return false, nil
}

// fill reads the store after the last seq delivered, delivering every page,
// then what arrived ahead and is still beyond it.
func (f *natsFollower) fill(ctx context.Context) error {
	if f.last == FromNow {
		return nil // no cursor yet: the first message published sets it
	}
	for {
		p, err := f.c.Poll(ctx, f.as, PollOptions{Since: f.last, Limit: 1000})
		if err != nil {
			return err
		}
		if p.Gap != nil && f.onGap != nil {
			f.onGap(*p.Gap)
		}
		for _, m := range p.Messages {
			if err := f.deliver(m); err != nil {
				return errDeliver{err}
			}
			f.last = m.Seq
		}
		if len(p.Messages) == 0 {
			break
		}
	}
	// Anything ahead that the store did not return (deleted since, say) is
	// still delivered, in order.
	for _, seq := range slices.Sorted(maps.Keys(f.ahead)) {
		if seq > f.last {
			if err := f.deliver(f.ahead[seq]); err != nil {
				return errDeliver{err}
			}
			f.last = seq
		}
	}
	clear(f.ahead)
	return nil
}
