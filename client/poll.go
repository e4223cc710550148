package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/kez-chat/kezd/client/envelope"
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
// returned, or Since: pass it as the next Since. It is past Skipped
// messages too.
type Page struct {
	protocol.Page
	// Skipped lists the messages of the page that could not be decoded.
	// Each message is decoded on its own, so one bad message (from a
	// hostile or older server) never hides the others.
	Skipped []SkippedMessage
	// Gap, when not nil, is the run of messages after Since that the
	// server deleted before this poll could read them (the answer's
	// reset, PROTOCOL.md v1.1): by retention, or by a delete-through from
	// any device of the handle. The page goes on after them.
	Gap *Gap
}

// Gap is a run of messages the server deleted before this client read
// them, seqs First through Last. A poll reports it in Page.Gap, a stream
// (its event: reset) through StreamOptions.OnGap, before the message that
// follows it. What the messages were is gone: only their seqs are known.
type Gap struct {
	First, Last int64
}

// gapBefore is the gap a reset naming oldest leaves after the cursor
// last, or nil when there is none (the reset is about seqs the client
// has).
func gapBefore(last, oldest int64) *Gap {
	if last < 0 || oldest <= last+1 {
		return nil
	}
	return &Gap{First: last + 1, Last: oldest - 1}
}

// SkippedMessage is a message of a poll page that could not be decoded.
type SkippedMessage struct {
	// Seq is the message's seq, or 0 when not even that could be read.
	Seq int64
	Err error
}

// decodePage reads a poll answer one message at a time. encoding/json
// checks a whole document's nesting depth at once, so decoding the page in
// one call would let one deep envelope fail all of it.
func decodePage(r io.Reader) (*Page, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{'); err != nil {
		return nil, err
	}
	var p Page
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		switch key {
		case "messages":
			if err := expectDelim(dec, '['); err != nil {
				return nil, err
			}
			for dec.More() {
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					return nil, err
				}
				var m Message
				if err := json.Unmarshal(raw, &m); err != nil {
					var seq struct {
						Seq int64 `json:"seq"`
					}
					_ = json.Unmarshal(raw, &seq) // best effort: 0 when unreadable
					p.Skipped = append(p.Skipped, SkippedMessage{Seq: seq.Seq, Err: fmt.Errorf("message %d: %w", seq.Seq, err)})
					continue
				}
				p.Messages = append(p.Messages, m)
			}
			if err := expectDelim(dec, ']'); err != nil {
				return nil, err
			}
		case "next":
			if err := dec.Decode(&p.Next); err != nil {
				return nil, err
			}
		case "reset":
			if err := dec.Decode(&p.Reset); err != nil {
				return nil, err
			}
		default:
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return nil, err
			}
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, err
	}
	return &p, nil
}

// seqs lists the seqs of the first n messages of ms.
func seqs(ms []Message, n int) []int64 {
	out := make([]int64, 0, n)
	for _, m := range ms[:min(n, len(ms))] {
		out = append(out, m.Seq)
	}
	return out
}

func expectDelim(dec *json.Decoder, want json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("want %q, got %v", want, tok)
	}
	return nil
}

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
	resp, err := c.send(ctx, http.MethodGet, protocol.InboxPath(as.Handle), q, nil, authHeader(as, ts, identity.PollString(as.Handle, opts.Since, ts)), nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, readError(resp)
	}
	p, err := decodePage(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, fmt.Errorf("decode %s answer: %w", resp.Request.URL.Path, err)
	}
	for _, m := range p.Messages {
		if m.Seq <= opts.Since || m.To != as.Handle {
			return nil, fmt.Errorf("poll: server returned message %d for %q after since=%d", m.Seq, m.To, opts.Since)
		}
	}
	if p.Reset != nil {
		// The oldest kept message is the first one returned; a reset that
		// says otherwise cannot be shown as a gap.
		if p.Reset.Oldest <= opts.Since || (len(p.Messages) > 0 && p.Reset.Oldest > p.Messages[0].Seq) {
			return nil, fmt.Errorf("poll: server reported oldest message %d after since=%d with the first returned %v", p.Reset.Oldest, opts.Since, seqs(p.Messages, 1))
		}
		p.Gap = gapBefore(opts.Since, p.Reset.Oldest)
	}
	return p, nil
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
