package client_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
)

// TestPollDecodesEachMessage: one message the client cannot decode (a
// hostile server, an envelope stored before kezd bounded their depth) is
// reported on its own, and the rest of the page is kept.
func TestPollDecodesEachMessage(t *testing.T) {
	t.Parallel()
	msg := func(seq, envelope string) string {
		return `{"seq":` + seq + `,"from":"alice","to":"bob","id":"m` + seq + `","envelope":` + envelope + `,"sent_at":"2026-01-01T00:00:00Z"}`
	}
	deep := strings.Repeat("[", 9999) + strings.Repeat("]", 9999)
	page := `{"messages":[` + strings.Join([]string{
		msg("1", `{"ok":1}`),
		`{"seq":2,"from":123,"to":"bob","id":"m2","envelope":{},"sent_at":"2026-01-01T00:00:00Z"}`,
		msg("3", deep),
		msg("4", `{"ok":4}`),
	}, ",") + `],"next":4}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(page))
	}))
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	bob, err := envelope.Generate("bob")
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Poll(t.Context(), bob, client.PollOptions{})
	if err != nil {
		t.Fatalf("Poll: %v", err)
	}
	var seqs []int64
	for _, m := range p.Messages {
		seqs = append(seqs, m.Seq)
	}
	if len(seqs) != 3 || seqs[0] != 1 || seqs[1] != 3 || seqs[2] != 4 || p.Next != 4 {
		t.Fatalf("page holds seqs %v, next %d; want [1 3 4], next 4", seqs, p.Next)
	}
	if len(p.Skipped) != 1 || p.Skipped[0].Seq != 2 || p.Skipped[0].Err == nil {
		t.Fatalf("skipped %+v, want seq 2 with its error", p.Skipped)
	}
	if string(p.Messages[1].Envelope) != deep {
		t.Fatal("the deep envelope was not kept as sent")
	}
}
