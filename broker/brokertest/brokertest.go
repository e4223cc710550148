// Package brokertest starts kezd's broker in the tests of the packages that
// use it (broker's own tests have their own, as they cannot import this).
package brokertest

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/internal/testwait"
	"github.com/kez-chat/kezd/protocol"
)

// Start starts a broker as cfg says, logging to log (nil discards the log),
// and closes it when the test ends; a failed start or close fails the test.
func Start(t testing.TB, cfg broker.Config, log *slog.Logger) *broker.Broker {
	t.Helper()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	b, err := broker.Start(t.Context(), cfg, log)
	if err != nil {
		t.Fatalf("start broker: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("close broker: %v", err)
		}
	})
	return b
}

// WaitInterest waits until b's embedded server routes handle's inbox to at
// least n subscriptions, its own clients' and other servers' (over routes)
// together, in the account kezd's messages live in. Interest has no event
// to wait on; a test waits for it before publishing what a new subscriber
// must get live.
func WaitInterest(t testing.TB, b *broker.Broker, handle string, n int) {
	t.Helper()
	acc := b.Server().GlobalAccount() // a broker without Auth has only this one
	if app, err := b.Server().LookupAccount(broker.AccountApp); err == nil {
		acc = app
	}
	subject := protocol.InboxSubject(handle)
	testwait.Until(t, fmt.Sprintf("%d subscriptions to %s", n, subject), func() bool {
		return acc.Interest(subject) >= n
	})
}
