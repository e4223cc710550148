package web_test

import (
	"context"
	"testing"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// offline turns the tab's network off (true) or on again.
func offline(off bool) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		if _, err := cdp.Call(ctx, t, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, t, network.OverrideNetworkState, network.OverrideNetworkStateParams{Offline: off, DownloadThroughput: -1, UploadThroughput: -1})
		return err
	})
}

// TestOfflineTabCatchesUp: a tab that goes offline shows reconnecting and,
// back online, catches up on what arrived meanwhile, each message once.
func TestOfflineTabCatchesUp(t *testing.T) {
	_, c, bob, alice := bobInGoAliceInBrowser(t)
	alice.openConversation("bob", "bob")
	alice.Do(offline(true))
	alice.waitStatus("reconnecting")
	for _, m := range []string{"one", "two", "three"} {
		if _, err := c.Send(t.Context(), bob, "alice", []byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	alice.Do(offline(false))
	alice.waitStatus("live")
	checkConversation(t, "alice", alice.messages(3), []shown{{Dir: "in", Text: "one"}, {Dir: "in", Text: "two"}, {Dir: "in", Text: "three"}})
}
