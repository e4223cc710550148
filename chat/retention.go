package chat

import (
	"context"
	"time"
)

// Retention.
//
// Each instance runs RunRetention; its passes delete what is older than
// the retention period in short batches (each one transaction, so a send
// waits at most for one batch on the inboxes it touches), and the stores
// keep the inboxes' quota usage as they delete. On Postgres a batch that
// another instance is running makes this one's pass a no-op, so several
// instances share the work rather than contend for it.

// DefaultRetentionEvery is how often retention looks for expired messages.
const DefaultRetentionEvery = time.Minute

// retentionBatch is how many messages one retention transaction deletes.
const retentionBatch = 500

// RunRetention deletes messages older than Config.Retention, once at once
// and then every RetentionEvery, until ctx ends. With Retention 0 it
// returns at once: messages are kept forever.
func (s *Service) RunRetention(ctx context.Context) {
	if s.retention <= 0 {
		return
	}
	t := time.NewTicker(s.retentionEvery)
	defer t.Stop()
	for {
		if n, err := s.Expire(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("retention pass failed; retrying at the next one", "deleted", n, "err", err)
		} else if n > 0 {
			s.log.Info("retention deleted expired messages", "deleted", n, "older_than", s.retention)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Expire deletes every message sent more than Config.Retention ago, in
// batches, and returns how many it deleted. With Retention 0 it deletes
// nothing.
func (s *Service) Expire(ctx context.Context) (int64, error) {
	if s.retention <= 0 {
		return 0, nil
	}
	before := s.now().Add(-s.retention)
	var total int64
	for {
		n, err := s.store.DeleteSentBefore(ctx, before, retentionBatch)
		total += n
		if err != nil {
			return total, s.storeError("delete expired messages", err)
		}
		if n < retentionBatch {
			return total, nil
		}
	}
}
