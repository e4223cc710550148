package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/protocol"
)

// NATSUserKey is the NATS user nkey ("U…") of id's signing key: the public
// key a NATS server sees when id logs in.
func NATSUserKey(id *envelope.Identity) (string, error) {
	pub, err := nkeys.Encode(nkeys.PrefixByteUser, id.Signing.Public().(ed25519.PublicKey))
	if err != nil {
		return "", err
	}
	return string(pub), nil
}

// NATSUserSeed is the NATS user seed ("SU…") of id's signing key, for tools
// such as the nats CLI (--nkey FILE). It is a secret: it is the signing key.
func NATSUserSeed(id *envelope.Identity) (string, error) {
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, id.Signing.Seed())
	if err != nil {
		return "", err
	}
	seed, err := kp.Seed()
	if err != nil {
		return "", err
	}
	return string(seed), nil
}

// NATSOptions are the nats.go options that log in as id: the signing key as
// the user nkey signing the server's nonce, the handle as user name, and
// reply inboxes under _INBOX.<handle>, the only ones id may subscribe to.
func NATSOptions(id *envelope.Identity) ([]nats.Option, error) {
	pub, err := NATSUserKey(id)
	if err != nil {
		return nil, err
	}
	priv := id.Signing
	return []nats.Option{
		nats.Nkey(pub, func(nonce []byte) ([]byte, error) { return ed25519.Sign(priv, nonce), nil }),
		nats.UserInfo(id.Handle, ""),
		nats.CustomInboxPrefix(protocol.ReplyInboxPrefix(id.Handle)),
		nats.Name("kez " + id.Handle),
	}, nil
}

// ConnectNATS connects to the NATS server at url logged in as id. More
// options (reconnect handlers, say) may follow; they must not change the login.
func ConnectNATS(url string, id *envelope.Identity, opts ...nats.Option) (*nats.Conn, error) {
	base, err := NATSOptions(id)
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("nats connect as %q: %w", id.Handle, err)
	}
	return nc, nil
}

// SubscribeInbox calls deliver for each message published on id's inbox
// subject. NATS carries only what is published while subscribed, possibly
// out of order across server instances; Stream is the gapless way to follow
// an inbox.
func SubscribeInbox(nc *nats.Conn, handle string, deliver func(Message)) (*nats.Subscription, error) {
	return nc.Subscribe(protocol.InboxSubject(handle), func(msg *nats.Msg) {
		var m Message
		if json.Unmarshal(msg.Data, &m) != nil || m.To != handle {
			return // not a stored message for this handle: nothing to deliver
		}
		deliver(m)
	})
}

// SendNATS encrypts text to to and sends it from from over NATS, as a
// request on kez.chat.send.<from>. The recipient's keys come from this
// Client's server. A request without an answer (a timeout, no responders) is
// retried with the same id, so the message is stored at most once.
func (c *Client) SendNATS(ctx context.Context, nc *nats.Conn, from *envelope.Identity, to string, text []byte) (*Sent, error) {
	id := NewID()
	env, err := c.Seal(ctx, from, to, id, text)
	if err != nil {
		return nil, err
	}
	body, err := sendBody(to, id, env)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := range c.attempts {
		if attempt > 0 {
			if err := sleep(ctx, c.backoff.delay(attempt-1)); err != nil {
				return nil, lastErr
			}
		}
		var reply *nats.Msg
		reply, lastErr = request(ctx, nc, protocol.SendSubject(from.Handle), body)
		if lastErr == nil {
			return decodeSendReply(reply.Data)
		}
		if ctx.Err() != nil || !(errors.Is(lastErr, nats.ErrNoResponders) || errors.Is(lastErr, nats.ErrTimeout) || errors.Is(lastErr, nats.ErrConnectionReconnecting)) {
			return nil, lastErr
		}
	}
	return nil, lastErr
}

// RequestTimeout bounds one NATS request when the caller's context has no
// deadline of its own (nats.go refuses a context without one).
const RequestTimeout = 10 * time.Second

// request is one NATS request/reply bounded by ctx, or by RequestTimeout
// when ctx has no deadline.
func request(ctx context.Context, nc *nats.Conn, subject string, data []byte) (*nats.Msg, error) {
	if _, ok := ctx.Deadline(); ok {
		return nc.RequestWithContext(ctx, subject, data)
	}
	rctx, cancel := context.WithTimeout(ctx, RequestTimeout)
	defer cancel()
	msg, err := nc.RequestWithContext(rctx, subject, data)
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return nil, nats.ErrTimeout // our own bound, not the caller's: worth a retry
	}
	return msg, err
}

func decodeSendReply(data []byte) (*Sent, error) {
	var r struct {
		Sent
		protocol.ErrorBody
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("send reply: %w", err)
	}
	if r.Error != "" {
		return nil, &Error{Code: r.Error, Message: r.Message}
	}
	return &r.Sent, nil
}
