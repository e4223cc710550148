package authcallout_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/internal/testwait"
)

// natsCLIPkg is the real nats CLI, at the version in go.mod.
const natsCLIPkg = "github.com/nats-io/natscli/nats"

// nats runs the real nats CLI with a private home, so no user context leaks
// in.
func natsCLI(t *testing.T, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, tool(t, natsCLIPkg, "nats"), args...)
	cmd.Env = []string{"HOME=" + home, "XDG_CONFIG_HOME=" + home, "PATH=" + os.Getenv("PATH")}
	return cmd
}

// TestNATSCLI: the nats CLI subscribes to alice's inbox with a seed file made
// from her kez key, and receives a message; without the key it is refused.
func TestNATSCLI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, embedded, authcallout.Config{}, authTimeout)
	// Build the CLI before the clock starts: on a busy machine with a cold
	// cache the build alone took longer than the deadline below.
	tool(t, natsCLIPkg, "nats")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// A kez private key is the nkey seed: the same 32 bytes, nkey-encoded.
	kp, err := nkeys.FromRawSeed(nkeys.PrefixByteUser, e.alice.priv.Seed())
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := kp.Seed()
	seedFile := filepath.Join(t.TempDir(), "alice.nk")
	writeFile(t, seedFile, string(seed))

	cmd := natsCLI(t, ctx, "--server", e.url, "--user", "alice", "--nkey", seedFile,
		"sub", "kez.chat.inbox.alice", "--count", "1", "--raw")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	// The CLI gives no sign once it has subscribed; watch the server's
	// interest in alice's inbox instead, as nats-server's own tests do.
	app, err := e.srv.LookupAccount(broker.AccountApp)
	if err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, "the CLI to subscribe to alice's inbox", func() bool { return app.SubscriptionInterest("kez.chat.inbox.alice") })
	e.send("bob", "alice", "cli", `{"hello":"cli"}`)
	var got string
	select {
	case got = <-lines:
	case <-ctx.Done():
		t.Fatal("the CLI received nothing")
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("nats sub: %v", err)
	}
	if !strings.Contains(got, `"from":"bob"`) || !strings.Contains(got, `{"hello":"cli"}`) {
		t.Errorf("the CLI printed %q", got)
	}

	// The same without the key: the user name alone is refused.
	refused, err := natsCLI(t, ctx, "--server", e.url, "--user", "alice", "sub", "kez.chat.inbox.alice", "--count", "1").CombinedOutput()
	if err == nil || !strings.Contains(string(refused), "Authorization Violation") {
		t.Errorf("without the key: %v\n%s", err, refused)
	}
}
