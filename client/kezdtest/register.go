package kezdtest

import (
	"context"
	"testing"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
)

// Register makes a fresh identity for handle and registers it through c,
// failing the test if the server refuses it.
func Register(t testing.TB, ctx context.Context, c *client.Client, handle string) *envelope.Identity {
	t.Helper()
	id, err := envelope.Generate(handle)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, id); err != nil {
		t.Fatalf("register %s: %v", handle, err)
	}
	return id
}

// WantCode fails the test unless err is kezd's error with code.
func WantCode(t testing.TB, err error, code client.Code) {
	t.Helper()
	if !client.IsCode(err, code) {
		t.Fatalf("got %v, want %s", err, code)
	}
}
