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

// RunRetention deletes messages older than Config.Retention, and forgets
// the ids of messages deleted more than Config.DedupWindow ago, once at
// once and then every RetentionEvery, until ctx ends. With both 0 it
// returns at once: messages and their ids are kept forever.
func (s *Service) RunRetention(ctx context.Context) {
	if s.retention <= 0 && s.dedupWindow <= 0 {
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
		if n, err := s.forgetDeletedIDs(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("forgetting deleted messages' ids failed; retrying at the next pass", "forgotten", n, "err", err)
		} else if n > 0 {
			s.log.Debug("retention forgot deleted messages' ids", "forgotten", n, "dedup_window", s.dedupWindow)
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
	return s.inBatches(ctx, "delete expired messages", s.now().Add(-s.retention), s.store.DeleteSentBefore)
}

// forgetDeletedIDs forgets the (sender, id) of every message deleted more
// than Config.DedupWindow ago, in batches: a retry of one is a new message
// from then on. With DedupWindow 0 it forgets nothing.
func (s *Service) forgetDeletedIDs(ctx context.Context) (int64, error) {
	if s.dedupWindow <= 0 {
		return 0, nil
	}
	return s.inBatches(ctx, "forget deleted ids", s.now().Add(-s.dedupWindow), s.store.ForgetDeletedIDs)
}

// inBatches calls del until a batch is short, and returns the total.
func (s *Service) inBatches(ctx context.Context, what string, before time.Time, del func(context.Context, time.Time, int) (int64, error)) (int64, error) {
	var total int64
	for {
		n, err := del(ctx, before, retentionBatch)
		total += n
		if err != nil {
			return total, s.storeError(what, err)
		}
		if n < retentionBatch {
			return total, nil
		}
	}
}
