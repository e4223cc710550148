package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kez-chat/kezd/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// PollOptions select a page of an inbox.
type PollOptions struct {
	// Since returns only messages with a greater seq.
	Since int64
	// Limit caps the page (server default 100, at most 1000); 0 leaves it to the server.
	Limit int
	// Wait, when positive, long-polls: the server answers as soon as a
	// message arrives or with an empty page after Wait (at most protocol.MaxPollWait;
	// rounded up to whole seconds).
	Wait time.Duration
}

// Page is one answer of Poll. Next is the seq of the last message
// returned, or Since: pass it as the next Since.
type Page = protocol.Page

// Poll reads as's inbox after opts.Since.
func (c *Client) Poll(ctx context.Context, as *envelope.Identity, opts PollOptions) (*Page, error) {
	if opts.Wait > protocol.MaxPollWait {
		return nil, fmt.Errorf("wait %v is longer than %v", opts.Wait, protocol.MaxPollWait)
	}
	q := url.Values{"since": {strconv.FormatInt(opts.Since, 10)}}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.Wait > 0 {
		q.Set("wait", strconv.FormatInt(int64((opts.Wait+time.Second-1)/time.Second), 10))
	}
	ts := c.now().Unix()
	var p Page
	err := c.do(ctx, http.MethodGet, protocol.InboxPath(as.Handle), q, nil, authHeader(as, ts, identity.PollString(as.Handle, opts.Since, ts)), &p)
	if err != nil {
		return nil, err
	}
	for _, m := range p.Messages {
		if m.Seq <= opts.Since || m.To != as.Handle {
			return nil, fmt.Errorf("poll: server returned message %d for %q after since=%d", m.Seq, m.To, opts.Since)
		}
	}
	return &p, nil
}

// Open verifies and decrypts m, a message delivered to me. The sender's
// signing key comes from the registry (and is cached), never from the
// message, and the envelope's signed sender, recipient and id must be the
// message's.
//
// A message sealed before its sender rotated keys is verified with the key
// the sender had when it was stored (a lookup ?at= its sent_at).
func (c *Client) Open(ctx context.Context, me *envelope.Identity, m Message) (*envelope.Opened, error) {
	o, err := envelope.Open(ctx, m.Envelope, me, c.senderKeys)
	if errors.Is(err, envelope.ErrSenderKeyMismatch) || errors.Is(err, envelope.ErrBadSignature) || errors.Is(err, envelope.ErrUnknownSender) {
		o, err = envelope.Open(ctx, m.Envelope, me, func(ctx context.Context, handle string) (ed25519.PublicKey, error) {
			h, err := c.LookupAt(ctx, handle, m.SentAt)
			if IsCode(err, CodeUnknownHandle) {
				return nil, fmt.Errorf("%w: %q was not registered then", envelope.ErrUnknownSender, handle)
			}
			if err != nil {
				return nil, err
			}
			p, err := h.Peer()
			if err != nil {
				return nil, err
			}
			return p.SigningKey, nil
		})
	}
	if err != nil {
		return nil, err
	}
	if o.From != m.From || o.To != m.To || o.ID != m.ID {
		return nil, fmt.Errorf("%w: message %d from %q id %q carries an envelope from %q id %q", ErrEnvelopeMismatch, m.Seq, m.From, m.ID, o.From, o.ID)
	}
	return o, nil
}
