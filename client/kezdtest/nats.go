package kezdtest

import (
	"bufio"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartNATS runs a plain nats-server (no accounts, no auth), built from the
// server module's build list, on a free loopback port until the test ends,
// and returns its client URL: for tests that publish what kezd would not.
func StartNATS(t testing.TB) string {
	t.Helper()
	bin := Binary(t, "github.com/nats-io/nats-server/v2", "nats-server")
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Server is ready") {
				close(ready)
				break
			}
		}
		for sc.Scan() { // keep the pipe drained
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	select {
	case <-ready:
	case <-time.After(30 * time.Second):
		t.Fatal("nats-server did not start within 30s")
	}
	return "nats://127.0.0.1:" + strconv.Itoa(port)
}
