package chat

import (
	"context"
	"sync"
	"time"

	"github.com/kez-chat/kezd/store"
)

// Every stored message is published (see the outbox in package store).
//
// Send publishes a fresh message, and a retry whose original is still
// unconfirmed (its instance may have died between the commit and the
// publish). A publish only queues the message on the NATS connection, so
// the 201 does not wait for it; instead RunOutbox, every confirmEvery,
// flushes the connection (one round trip for everything published since
// the last tick) and confirms, one tick later, what the previous flush
// covered. The extra tick leaves the server time to pass the message on to
// its routes before the entry goes: a process killed just after a flush
// leaves its entries unconfirmed, and they are published again, never lost.
//
// Entries left unconfirmed for RepublishAfter are swept by whichever
// instance gets to them first (the store leases them), published again
// and confirmed. So every message the store holds is published within
// about RepublishAfter plus a sweep interval of its commit, and a subscriber
// may see it more than once.

// DefaultRepublishAfter is how long a message may stay unconfirmed before
// any instance publishes it again.
const DefaultRepublishAfter = 5 * time.Second

const (
	// confirmEvery is the outbox flush and confirmation tick.
	confirmEvery = 200 * time.Millisecond
	// maxUnconfirmed bounds the keys an instance holds for confirmation;
	// beyond it they are left for the sweep (a repeat, never a loss).
	maxUnconfirmed = 1 << 16
	// sweepPage is how many entries one sweep claims at a time.
	sweepPage = 500
	// flushTimeout bounds one flush of the NATS connection.
	flushTimeout = 5 * time.Second
)

// unconfirmed holds the keys this instance published and has not yet
// confirmed to the store.
type unconfirmed struct {
	mu   sync.Mutex
	keys []store.MessageKey
}

func (u *unconfirmed) add(k store.MessageKey) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.keys) < maxUnconfirmed {
		u.keys = append(u.keys, k)
	}
}

func (u *unconfirmed) take() []store.MessageKey {
	u.mu.Lock()
	defer u.mu.Unlock()
	k := u.keys
	u.keys = nil
	return k
}

// publish publishes a stored message whose publish is pending and queues
// it for confirmation. A failure leaves it to the sweep.
func (s *Service) publish(ctx context.Context, m store.Message) {
	if s.pub == nil {
		return
	}
	if err := s.pub.Publish(ctx, m); err != nil {
		s.publishFailures.Add(1)
		s.log.Debug("publish failed; the outbox sweep publishes it again", "to", m.To, "seq", m.Seq, "err", err)
		s.faults.Fail("publish", err)
		return
	}
	s.faults.OK("publish")
	s.unconfirmed.add(store.MessageKey{To: m.To, Seq: m.Seq})
}

// Republished counts the messages this instance's sweeps published again.
func (s *Service) Republished() int64 { return s.republished.Load() }

// RunOutbox confirms this instance's publishes and sweeps the outbox until
// ctx ends (see above). Without a publisher it returns at once.
func (s *Service) RunOutbox(ctx context.Context) {
	if s.pub == nil {
		return
	}
	confirm := time.NewTicker(confirmEvery)
	defer confirm.Stop()
	sweep := time.NewTicker(s.sweepEvery())
	defer sweep.Stop()
	var flushed []store.MessageKey
	for {
		select {
		case <-ctx.Done():
			// Confirm what is flushed by now, so that a clean shutdown
			// leaves nothing for another instance to repeat.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
			s.confirmTick(cctx, s.confirmTick(cctx, flushed))
			cancel()
			return
		case <-confirm.C:
			flushed = s.confirmTick(ctx, flushed)
		case <-sweep.C:
			s.sweepOutbox(ctx)
		}
	}
}

// sweepEvery is the sweep interval: often enough that an entry waits at
// most about one and a half RepublishAfter.
func (s *Service) sweepEvery() time.Duration {
	return max(s.republishAfter/2, confirmEvery)
}

// confirmTick confirms flushed (keys a previous tick's flush covered), then
// flushes what was published since and returns those keys for the next tick.
func (s *Service) confirmTick(ctx context.Context, flushed []store.MessageKey) []store.MessageKey {
	if len(flushed) > 0 {
		if err := s.store.ConfirmPublished(ctx, flushed); err != nil {
			s.faults.Fail("outbox confirm", err)
			// Kept for the next tick; past the bound, left to the sweep.
			if len(flushed) > maxUnconfirmed {
				flushed = nil
			}
		} else {
			s.faults.OK("outbox confirm")
			flushed = nil
		}
	}
	batch := s.unconfirmed.take()
	if len(batch) == 0 {
		return flushed
	}
	fctx, cancel := context.WithTimeout(ctx, flushTimeout)
	defer cancel()
	if err := s.pub.Flush(fctx); err != nil {
		// Not known to have left: not confirmed; the sweep publishes them.
		s.faults.Fail("nats flush", err)
		return flushed
	}
	s.faults.OK("nats flush")
	return append(flushed, batch...)
}

// sweepOutbox publishes again what no instance confirmed in time.
func (s *Service) sweepOutbox(ctx context.Context) {
	for {
		n, err := s.store.SweepUnpublished(ctx, s.republishAfter, sweepPage, func(ms []store.Message) error {
			for _, m := range ms {
				if err := s.pub.Publish(ctx, m); err != nil {
					return err
				}
			}
			fctx, cancel := context.WithTimeout(ctx, flushTimeout)
			defer cancel()
			return s.pub.Flush(fctx)
		})
		if err != nil {
			if ctx.Err() == nil {
				s.faults.Fail("outbox sweep", err)
			}
			return
		}
		s.faults.OK("outbox sweep")
		if n > 0 {
			s.republished.Add(int64(n))
			s.log.Info("published again messages whose publish was not confirmed", "count", n, "after", s.republishAfter)
		}
		if n < sweepPage {
			return
		}
	}
}
