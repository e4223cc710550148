// Package brokertest starts kezd's broker in the tests of the packages that
// use it (broker's own tests have their own, as they cannot import this).
package brokertest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/kez-chat/kezd/broker"
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
