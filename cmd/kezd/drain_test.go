package main

import (
	"io"
	"net/http"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client/kezdtest"
)

// TestDrainBeforeShutdown: with --drain-delay, a SIGTERM first makes the
// instance report not ready while it keeps serving, on connections it
// closes after each response; only then does it stop accepting and exit.
func TestDrainBeforeShutdown(t *testing.T) {
	t.Parallel()
	bin := kezdtest.Binary(t, "github.com/kez-chat/kezd/cmd/kezd", "kezd")
	p := startProcess(t, bin, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "off", "--nats-listen", "off",
		"--data-dir", t.TempDir(), "--drain-delay", "3s")
	base := "http://" + p.waitLine(servingAddr)[1]
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s while draining: %v", path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	if resp, _ := get("/readyz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz before shutdown: %d", resp.StatusCode)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	p.waitLine(regexp.MustCompile(`msg="draining before shutdown"`))
	began := time.Now()
	resp, body := get("/readyz")
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, "draining") {
		t.Errorf("/readyz while draining: %d %s, want 503 naming the drain", resp.StatusCode, body)
	}
	resp, _ = get("/healthz")
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200 (still serving)", resp.StatusCode)
	}
	if !resp.Close {
		t.Error("a response while draining keeps its connection open, want Connection: close")
	}
	if time.Since(began) > 2*time.Second {
		t.Fatalf("the checks took %s, longer than the drain: inconclusive", time.Since(began))
	}
	go p.drain()
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("kezd exited with %v after draining", err)
	}
	if d := time.Since(began); d < 2500*time.Millisecond {
		t.Errorf("kezd exited %s after the drain began, before --drain-delay 3s", d)
	}
}
