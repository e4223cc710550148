// Package natsapi owns kezd's request/reply API on NATS: the responder on
// kez.chat.send.<handle> that sends a message for the handle in the subject
// through the same core send path as POST /v1/messages.
package natsapi

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// Defaults for SendConfig.
const (
	DefaultSendQueueGroup = "kezd.send"
	DefaultSendTimeout    = 10 * time.Second
)

// Sender is the core's send path: chat.Service implements it. Send keeps
// body (the message's data, which nats.go allocates for each message).
// Lookup finds the sender, as HTTP's authentication does.
type Sender interface {
	Send(ctx context.Context, from string, body []byte) (protocol.SendResult, error)
	Lookup(ctx context.Context, handle string) (store.Handle, error)
}

// SendConfig configures the send responder.
type SendConfig struct {
	// QueueGroup lets every instance subscribe; each send is handled once.
	QueueGroup string
	// Workers bounds how many sends are handled at once; default 8×GOMAXPROCS.
	Workers int
	// Timeout bounds one send; default 10 s.
	Timeout time.Duration
}

// SendResponder answers sends on NATS. Start it with StartSend.
type SendResponder struct {
	cfg    SendConfig
	sender Sender
	log    *slog.Logger
	resp   *broker.Responder
}

// StartSend subscribes to protocol.SendSubjects on nc (kezd's own connection in the
// application account) and answers until Stop. The sender is the handle in
// the subject: the callout's permissions let only that handle publish there.
// Each request's data is a POST /v1/messages body; the reply is the same JSON
// the HTTP API answers, or {"error":code,"message":text}.
func StartSend(ctx context.Context, nc *nats.Conn, cfg SendConfig, sender Sender, log *slog.Logger) (*SendResponder, error) {
	if cfg.QueueGroup == "" {
		cfg.QueueGroup = DefaultSendQueueGroup
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 8 * runtime.GOMAXPROCS(0)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultSendTimeout
	}
	r := &SendResponder{cfg: cfg, sender: sender, log: log}
	var err error
	if r.resp, err = broker.Respond(ctx, nc, protocol.SendSubjects, cfg.QueueGroup, cfg.Workers, r.handle); err != nil {
		return nil, fmt.Errorf("send responder: %w", err)
	}
	return r, nil
}

// Stop stops answering and waits for sends in flight to finish.
func (r *SendResponder) Stop() { r.resp.Stop() }

func (r *SendResponder) handle(ctx context.Context, m *nats.Msg) {
	from, _ := protocol.SendSender(m.Subject)
	if m.Reply != "" && !protocol.IsReplyInbox(from, m.Reply) {
		// kezd's own user may publish anywhere, and NATS checks a
		// publisher's permission on the subject, never on its reply-to: a
		// reply to anything but the sender's own reply inbox would let a
		// client make kezd publish where the client may not (another
		// handle's inbox, another handle's send subject). Refuse the send.
		r.log.Debug("nats send refused: reply subject outside the sender's reply inbox", "from", from)
		return
	}
	var reply any
	hdr := nats.Header{}
	if err := identity.ValidateHandle(from); err != nil {
		reply = chat.Errorf(protocol.CodeInvalidHandle, "sender in subject: %v", err).Body()
	} else {
		ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
		res, err := r.send(ctx, from, m.Data)
		cancel()
		if err != nil {
			e := chat.AsError(err)
			if e.Code == protocol.CodeInternal || e.Code == protocol.CodeUnavailable {
				r.log.Error("nats send failed", "from", from, "code", string(e.Code), "err", err)
			}
			reply = e.Body()
			if e.Code == protocol.CodeRateLimited || e.Code == protocol.CodeInboxFull {
				// Every refusal HTTP answers 429 carries it there; here as
				// HTTP's header says it: whole seconds.
				hdr.Set(protocol.RetryAfterHeader, strconv.FormatInt(e.RetryAfterSeconds(), 10))
			}
		} else {
			reply = res
		}
	}
	if m.Reply == "" {
		// A plain publish: the send happened (or not); nobody is listening.
		return
	}
	b, err := protocol.Marshal(reply)
	if err == nil {
		err = m.RespondMsg(&nats.Msg{Data: b, Header: hdr})
	}
	if err != nil {
		r.log.Warn("nats send: reply failed", "from", from, "err", err)
	}
}

// send sends body from the handle from, once it is still registered. The
// server lets a connection publish as the handle it logged in as, and the
// revocation of a key closes the connections that logged in with it
// (authcallout.Service.Revoked, broker.Broker.OnRevocation); this refuses,
// as HTTP refuses their signatures, what such a connection publishes after
// its handle was deleted and before it was closed.
func (r *SendResponder) send(ctx context.Context, from string, body []byte) (protocol.SendResult, error) {
	if _, err := r.sender.Lookup(ctx, from); err != nil {
		if e := chat.AsError(err); e.Code == protocol.CodeUnknownHandle {
			return protocol.SendResult{}, chat.Errorf(protocol.CodeUnauthorized, "signer %q is not registered", from)
		}
		return protocol.SendResult{}, err
	}
	return r.sender.Send(ctx, from, body)
}
