package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/pgtest"
)

// A deleted message's id that is recorded anew (its deleted_at moved on)
// while ForgetDeletedIDs waits for its row is kept: the forget re-reads the
// row's deleted_at, not only its key.
func TestForgetKeepsAnIDRecordedMeanwhile(t *testing.T) {
	t.Parallel()
	url := pgtest.NewDatabase(t)
	db := open(t, url)
	register(t, db, "alice")
	register(t, db, "bob")
	ctx := t.Context()
	a, err := db.AppendMessage(ctx, store.NewMessage{From: "alice", To: "bob", ID: "m1", Envelope: []byte(`1`)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.DeleteMessages(ctx, "bob", a.Message.Seq); err != nil {
		t.Fatal(err)
	}
	raw, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close(context.Background())
	if _, err := raw.Exec(ctx, `UPDATE deleted_ids SET deleted_at = now() - interval '40 days'`); err != nil {
		t.Fatal(err)
	}
	// Recorded anew, not yet committed.
	tx, err := raw.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, `UPDATE deleted_ids SET deleted_at = now() WHERE sender = 'alice' AND client_id = 'm1'`); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int64
		err error
	}
	forgot := make(chan result, 1)
	go func() {
		n, err := db.ForgetDeletedIDs(ctx, time.Now().Add(-30*24*time.Hour), 100)
		forgot <- result{n, err}
	}()
	testwait.Until(t, "the forget to wait for the row's lock", func() bool {
		var waiting bool
		err := pgxQueryRow(ctx, url, `SELECT EXISTS (SELECT 1 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%DELETE FROM deleted_ids%')`, &waiting)
		return err == nil && waiting
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if r := <-forgot; r.err != nil || r.n != 0 {
		t.Fatalf("ForgetDeletedIDs = %d, %v; want 0 forgotten: the id was recorded anew", r.n, r.err)
	}
	if m, err := db.Sent(ctx, "alice", "m1"); err != nil || m.Seq != a.Message.Seq {
		t.Fatalf("Sent(alice, m1) = %+v, %v after the forget; want seq %d kept", m, err, a.Message.Seq)
	}
}

// pgxQueryRow runs one query on a connection of its own.
func pgxQueryRow(ctx context.Context, url, sql string, dest ...any) error {
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer c.Close(context.Background())
	return c.QueryRow(ctx, sql).Scan(dest...)
}
