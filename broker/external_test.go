package broker

import (
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client/kezdtest"
)

// natsServerBinary builds nats-server from the module version in go.mod,
// once per test binary.
func natsServerBinary(t testing.TB) string {
	t.Helper()
	return kezdtest.Binary(t, "github.com/nats-io/nats-server/v2", "nats-server")
}

// runNATSServer starts a nats-server process with a user and password; the
// returned function stops it.
func runNATSServer(t testing.TB, port int) (stop func()) {
	t.Helper()
	cmd := exec.Command(natsServerBinary(t), "-a", "127.0.0.1", "-p", strconv.Itoa(port), "--user", "kezd", "--pass", "s3cret")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitStatus waits until nc reaches status (or is already there).
func waitStatus(t testing.TB, nc *nats.Conn, status nats.Status) {
	t.Helper()
	ch := nc.StatusChanged(status)
	defer nc.RemoveStatusListener(ch)
	if nc.Status() == status {
		return
	}
	select {
	case <-ch:
	case <-time.After(20 * time.Second):
		t.Fatalf("connection did not reach %v (is %v)", status, nc.Status())
	}
}

func TestExternalServer(t *testing.T) {
	t.Parallel()
	port := kezdtest.FreePort(t)
	stop := runNATSServer(t, port)
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	b := startBroker(t, Config{URL: url, User: "kezd", Password: "s3cret"})
	waitStatus(t, b.Conn(), nats.CONNECTED)
	if err := b.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := b.ClientURL(); got != url {
		t.Errorf("ClientURL = %q, want %q", got, url)
	}

	l := newListener()
	l.subscribe(t, b, "alice")
	if err := b.Publish(t.Context(), testMessage("alice", 1, `{}`)); err != nil {
		t.Fatal(err)
	}
	recv(t, l.msgs)

	// Another connection to the same server, with the caller's credentials.
	other, err := b.Connect(nats.UserInfo("kezd", "s3cret"))
	if err != nil {
		t.Fatal(err)
	}
	other.Close()

	// Outage: the server dies and comes back on the same port.
	stop()
	waitStatus(t, b.Conn(), nats.RECONNECTING)
	if err := b.Ping(t.Context()); err == nil {
		t.Error("Ping succeeded with the server down")
	}
	runNATSServer(t, port)
	recv(t, l.resync)
	waitStatus(t, b.Conn(), nats.CONNECTED)
	if err := b.Publish(t.Context(), testMessage("alice", 2, `{}`)); err != nil {
		t.Fatal(err)
	}
	if m := recv(t, l.msgs); m.Seq != 2 {
		t.Errorf("after the outage got %+v", m)
	}
}

func TestExternalServerNotUpYet(t *testing.T) {
	t.Parallel()
	port := kezdtest.FreePort(t)
	b := startBroker(t, Config{URL: "nats://kezd:s3cret@127.0.0.1:" + strconv.Itoa(port)})
	if got := b.ClientURL(); got != "nats://127.0.0.1:"+strconv.Itoa(port) {
		t.Errorf("ClientURL %q still holds credentials", got)
	}
	if err := b.Ping(t.Context()); err == nil {
		t.Error("Ping succeeded with no server")
	}
	runNATSServer(t, port)
	waitStatus(t, b.Conn(), nats.CONNECTED)
	if err := b.Ping(t.Context()); err != nil {
		t.Error(err)
	}
}
