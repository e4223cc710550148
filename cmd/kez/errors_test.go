package main

import (
	"strings"
	"testing"

	"github.com/kez-chat/kezd/client"
)

func TestEveryCodeHasAMessage(t *testing.T) {
	t.Parallel()
	codes := []client.Code{
		client.CodeInvalidRequest, client.CodeInvalidHandle, client.CodeBadSignature,
		client.CodeStaleTimestamp, client.CodeUnauthorized, client.CodeForbidden,
		client.CodeUnknownHandle, client.CodeHandleTaken, client.CodeKeyTaken,
		client.CodeTooLarge, client.CodeRateLimited, client.CodeUnavailable, client.CodeInternal,
	}
	seen := map[string]client.Code{}
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
