package broker

import (
	"net/http"
	"strings"
	"testing"
)

// TestWebSocketOrigins: a browser page on another origin cannot open the
// NATS WebSocket (and log in with a user's key in their browser); the
// allowed origin can, and so can a native client, which sends no Origin.
func TestWebSocketOrigins(t *testing.T) {
	t.Parallel()
	b := startBroker(t, Config{Listen: "127.0.0.1:-1", WebSocketListen: "127.0.0.1:-1",
		WebSocketAllowedOrigins: []string{"https://chat.example"}})
	wsURL := b.WebSocketURL()
	upgrade := func(origin string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http"+strings.TrimPrefix(wsURL, "ws"), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	for origin, want := range map[string]int{
		"https://chat.example":     http.StatusSwitchingProtocols,
		"https://chat.example:443": http.StatusSwitchingProtocols,
		"":                         http.StatusSwitchingProtocols,
		"https://evil.example":     http.StatusForbidden,
		"http://chat.example":      http.StatusForbidden,
		"https://chat.example:444": http.StatusForbidden,
	} {
		if got := upgrade(origin); got != want {
			t.Errorf("Origin %q: status %d, want %d", origin, got, want)
		}
	}
	connect(t, wsURL).Close() // a native client over WebSocket
}
