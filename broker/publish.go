package broker

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/nats-io/nats.go"
)

// Publish sends a stored message to its recipient's inbox subject: data is
// the stored message JSON, the Kez-Seq header its seq, the Kez-Mac header
// its MAC (see mac.go). It does not wait for
// the server: while the connection is down the message is buffered (bounded;
// an error once the buffer is full) and flushed on reconnect, and streams
// resync from the store anyway.
func (b *Broker) Publish(ctx context.Context, m store.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := identity.ValidateHandle(m.To); err != nil {
		return fmt.Errorf("publish: recipient: %w", err)
	}
	data := protocol.AppendMessage(nil, m) // the stored message JSON, envelope as sent
	msg := &nats.Msg{
		Subject: protocol.InboxSubject(m.To),
		Data:    data,
		Header:  nats.Header{protocol.SeqHeader: []string{strconv.FormatInt(m.Seq, 10)}},
	}
	if b.macKey != nil {
		msg.Header.Set(protocol.MACHeader, macOf(b.macKey, msg.Subject, m.Seq, data))
	}
	if err := b.nc.PublishMsg(msg); err != nil {
		return fmt.Errorf("publish %s: %w", msg.Subject, err)
	}
	return nil
}

// Flush returns once the server has taken everything published before it
// (one round trip), or ctx ends; without a deadline on ctx it waits at most
// five seconds.
func (b *Broker) Flush(ctx context.Context) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
	}
	if err := b.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats flush: %w", err)
	}
	return nil
}
