package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/protocol"
)

func TestEveryCodeHasAMessage(t *testing.T) {
	t.Parallel()
	codes := []protocol.Code{
		protocol.CodeInvalidRequest, protocol.CodeInvalidHandle, protocol.CodeBadSignature,
		protocol.CodeStaleTimestamp, protocol.CodeUnauthorized, protocol.CodeForbidden,
		protocol.CodeUnknownHandle, protocol.CodeHandleTaken, protocol.CodeKeyTaken,
		protocol.CodeTooLarge, protocol.CodeRateLimited, protocol.CodeUnavailable, protocol.CodeInternal,
	}
	seen := map[string]protocol.Code{}
	for _, code := range codes {
		t.Run(string(code), func(t *testing.T) {
			err := &client.Error{Status: 400, Code: code, Message: "detail"}
			msg := describe(err)
			if msg == "" || strings.Contains(msg, "\n") || !strings.Contains(msg, "detail") {
				t.Fatalf("describe(%s) = %q", code, msg)
			}
			if exitCode(err) == 0 {
				t.Fatal("exit code 0")
			}
		})
		m := codeMessages[code]
		if other, dup := seen[m]; dup || m == "" {
			t.Fatalf("%s and %s share the message %q", code, other, m)
		}
		seen[m] = code
	}
}

// TestStatusLines: what kez tail prints while it reconnects says what a
// person needs, with the server's address and never a query string.
func TestStatusLines(t *testing.T) {
	t.Parallel()
	const streamURL = "http://127.0.0.1:18788/v1/inbox/alice/stream?auth=1796153219%3A55c00f0d&since=1"
	refused := &url.Error{Op: "Get", URL: streamURL, Err: &net.OpError{Op: "dial", Net: "tcp",
		Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}}
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"unreachable", &client.ReconnectError{Err: refused, Delay: 2*time.Second + 30*time.Millisecond},
			"server unreachable at http://127.0.0.1:18788: connection refused; retrying in 2s"},
		{"no such host", &url.Error{Op: "Get", URL: "http://kez.invalid/v1/inbox/a?since=0", Err: &net.DNSError{Err: "no such host", Name: "kez.invalid", IsNotFound: true}},
			"server unreachable at http://kez.invalid: no such host kez.invalid"},
		{"ended by the server", &client.ReconnectError{Err: fmt.Errorf("%w (EOF)", client.ErrStreamEnded), Delay: 1500 * time.Millisecond},
			"the server ended the stream; retrying in 1.5s"},
		{"rate limited", &client.ReconnectError{Err: &client.Error{Status: 429, Code: protocol.CodeRateLimited}, Delay: time.Second},
			codeMessages[protocol.CodeRateLimited] + "; retrying in 1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(tt.err); got != tt.want {
				t.Fatalf("describe = %q, want %q", got, tt.want)
			}
		})
	}
}
