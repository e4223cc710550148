package protocol_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/kez-chat/kezd/protocol"
)

func TestMarshalDoesNotEscapeHTML(t *testing.T) {
	b, err := protocol.Marshal(protocol.Message{To: "bob", Envelope: json.RawMessage(`"<a&b>"`)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"seq":0,"from":"","to":"bob","id":"","envelope":"<a&b>","sent_at":"0001-01-01T00:00:00Z"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestSubjectMatches(t *testing.T) {
	for _, tc := range []struct {
		pattern, subject string
		want             bool
	}{
		{"_INBOX.alice.>", "_INBOX.alice.x", true},
		{"_INBOX.alice.>", "_INBOX.alice.x.y", true},
		{"_INBOX.alice.>", "_INBOX.alice", false},
		{"_INBOX.alice.>", "_INBOX.alice.", false},
		{"_INBOX.alice.>", "_INBOX.alice..x", false},
		{"_INBOX.alice.>", "_INBOX.alicex.y", false},
		{"_INBOX.alice.>", "_INBOX.bob.x", false},
		{"_INBOX.alice.>", "kez.chat.inbox.bob", false},
		{"kez.chat.send.*", "kez.chat.send.alice", true},
		{"kez.chat.send.*", "kez.chat.send.alice.x", false},
		{"kez.chat.send.*", "kez.chat.send", false},
		{"kez.chat.inbox.alice", "kez.chat.inbox.alice", true},
		{"kez.chat.inbox.alice", "kez.chat.inbox.alice2", false},
		{"kez.chat.inbox.>", "kez.chat.inbox.alice", true},
		{"a", "", false},
	} {
		if got := protocol.SubjectMatches(tc.pattern, tc.subject); got != tc.want {
			t.Errorf("SubjectMatches(%q, %q) = %v, want %v", tc.pattern, tc.subject, got, tc.want)
		}
	}
}

// The reply check of the send responder and the permission of the callout
// are one definition: every reply inbox a handle's connection makes is one
// the permissions let it subscribe to, and one the responder answers on.
func TestReplyInboxIsWhatPermissionsAllow(t *testing.T) {
	p := protocol.HandlePermissions("alice")
	if !slices.Contains(p.SubAllow, protocol.ReplyInboxes("alice")) {
		t.Fatalf("permissions %v do not allow alice's reply inboxes", p.SubAllow)
	}
	inbox := protocol.ReplyInboxPrefix("alice") + ".Xyz123"
	if !protocol.IsReplyInbox("alice", inbox) {
		t.Fatalf("%q is not alice's reply inbox", inbox)
	}
	for _, s := range []string{"_INBOX.bob.x", protocol.InboxSubject("bob"), protocol.SendSubject("bob"), "_INBOX.alice"} {
		if protocol.IsReplyInbox("alice", s) {
			t.Errorf("%q counts as alice's reply inbox", s)
		}
	}
}

func TestPaths(t *testing.T) {
	for got, want := range map[string]string{
		protocol.HandlePath("alice"): "/v1/handles/alice",
		protocol.InboxPath("alice"):  "/v1/inbox/alice",
		protocol.StreamPath("alice"): "/v1/inbox/alice/stream",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}
