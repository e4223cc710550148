package main

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kez-chat/kezd/client/kezdtest"
)

// user is one person at a terminal: their own HOME, the kez binary, the server.
type user struct {
	t      *testing.T
	bin    string
	home   string
	server string
}

func (u *user) env() []string {
	return []string{"HOME=" + u.home, "PATH=" + os.Getenv("PATH"), "KEZ_SERVER=" + u.server}
}

// kez runs one kez command to completion.
func (u *user) kez(stdin string, args ...string) (stdout, stderr string, code int) {
	u.t.Helper()
	cmd := exec.CommandContext(u.t.Context(), u.bin, args...)
	cmd.Env = u.env()
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errOut.String(), ee.ExitCode()
	}
	if err != nil {
		u.t.Fatal(err)
	}
	return out.String(), errOut.String(), 0
}

func (u *user) must(stdin string, args ...string) string {
	u.t.Helper()
	out, errOut, code := u.kez(stdin, args...)
	if code != 0 {
		u.t.Fatalf("kez %v: exit %d: %s", args, code, errOut)
	}
	return out
}

// proc is a long-running command whose output lines a test waits for.
type proc struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout chan string
	stderr chan string
}

func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = env
	outR, _ := cmd.StdoutPipe()
	errR, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, stdout: lines(outR), stderr: lines(errR)}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	return p
}

func lines(r io.Reader) chan string {
	ch := make(chan string, 100)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// await waits for a line containing want on ch.
func (p *proc) await(ch chan string, want string) string {
	p.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				p.t.Fatalf("%s ended before printing %q", p.cmd.Path, want)
			}
			if strings.Contains(l, want) {
				return l
			}
		case <-timeout:
			p.t.Fatalf("%s did not print %q", p.cmd.Path, want)
		}
	}
}

// within reports whether a line containing want arrives on ch within d.
func (p *proc) within(ch chan string, want string, d time.Duration) bool {
	p.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-ch:
			if !ok {
				p.t.Fatalf("%s ended before printing %q", p.cmd.Path, want)
			}
			if strings.Contains(l, want) {
				return true
			}
		case <-timeout:
			return false
		}
	}
}

// interrupt ends a tail as Ctrl-C does and checks it exits cleanly.
func (p *proc) interrupt() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if err := p.cmd.Wait(); err != nil {
		p.t.Fatalf("%s after SIGINT: %v", p.cmd.Path, err)
	}
}

func checkKeyFile(t *testing.T, home, handle string) {
	t.Helper()
	path := filepath.Join(home, ".config", "kez", handle+".json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Fatalf("%s is mode %v: readable by others", path, fi.Mode().Perm())
	}
}

// TestTour follows the README quick tour with the real binaries: alice and
// bob make keys and register, then chat both ways over SSE and over NATS.
func TestTour(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	kez := kezdtest.Binary(t, "github.com/kez-chat/kezd/cmd/kez", "kez")
	alice := &user{t: t, bin: kez, home: t.TempDir(), server: srv.URL}
	bob := &user{t: t, bin: kez, home: t.TempDir(), server: srv.URL}

	for _, u := range []struct {
		*user
		handle string
	}{{alice, "alice"}, {bob, "bob"}} {
		u.must("", "keygen", u.handle)
		checkKeyFile(t, u.home, u.handle)
		u.must("", "register", u.handle)
		checkKeyFile(t, u.home, u.handle) // rewritten to remember the server
	}
	if out := alice.must("", "whois", "bob"); !strings.Contains(out, "signing key") {
		t.Fatalf("whois: %s", out)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	if out := alice.must("", "whois", "bob@"+host); !strings.Contains(out, "stream") {
		t.Fatalf("whois by webfinger: %s", out)
	}

	// Over SSE: bob tails, alice sends; then the other way, text from stdin.
	tail := start(t, kez, bob.env(), "tail", "--as", "bob")
	tail.await(tail.stderr, "connecting")
	tail.await(tail.stderr, "live")
	alice.must("", "send", "--as", "alice", "bob", "hello", "bob")
	tail.await(tail.stdout, "alice: hello bob")
	tail.interrupt()

	tail = start(t, kez, alice.env(), "tail", "--as", "alice")
	tail.await(tail.stderr, "live")
	bob.must("hi alice, from stdin\n", "send", "--as", "bob", "alice")
	tail.await(tail.stdout, "bob: hi alice, from stdin")
	tail.interrupt()

	// Over NATS, logged in with the kez key.
	tail = start(t, kez, bob.env(), "tail", "--as", "bob", "--nats")
	tail.await(tail.stderr, "live")
	alice.must("", "send", "--as", "alice", "bob", "over", "nats")
	tail.await(tail.stdout, "alice: over nats")
	tail.interrupt()

	tail = start(t, kez, alice.env(), "tail", "--as", "alice", "--nats")
	tail.await(tail.stderr, "live")
	bob.must("", "send", "--as", "bob", "alice", "back over nats")
	tail.await(tail.stdout, "bob: back over nats")
	tail.interrupt()

	// The inbox shows everything, decrypted; --json for scripts.
	out := bob.must("", "inbox", "--as", "bob")
	if !strings.Contains(out, "alice: hello bob") || !strings.Contains(out, "alice: over nats") {
		t.Fatalf("inbox: %s", out)
	}
	out = bob.must("", "inbox", "--as", "bob", "--since", "1", "--json")
	var m shown
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &m); err != nil || m.Seq != 2 || m.Text != "over nats" {
		t.Fatalf("inbox --json: %q %v", out, err)
	}

	// Protocol errors: one human line, non-zero exit.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"whois", "nobody"}, "no such handle"},
		{[]string{"send", "--as", "alice", "nobody", "hi"}, "no such handle"},
		{[]string{"register", "alice"}, "already registered"},
	} {
		_, errOut, code := alice.kez("", tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Fatalf("kez %v: exit %d, stderr %q", tc.args, code, errOut)
		}
	}
	checkKeyFile(t, alice.home, "alice")
	checkKeyFile(t, bob.home, "bob")
}

// TestNkeyWithNATSCLI: the official nats CLI subscribes to alice's inbox with
// the seed `kez nkey` prints, and is refused without it.
func TestNkeyWithNATSCLI(t *testing.T) {
	t.Parallel()
	srv := kezdtest.Start(t, kezdtest.Config{})
	kez := kezdtest.Binary(t, "github.com/kez-chat/kezd/cmd/kez", "kez")
	natsCLI := kezdtest.Binary(t, "github.com/nats-io/natscli/nats", "nats")
	alice := &user{t: t, bin: kez, home: t.TempDir(), server: srv.URL}
	bob := &user{t: t, bin: kez, home: t.TempDir(), server: srv.URL}
	alice.must("", "keygen", "alice")
	alice.must("", "register", "alice")
	bob.must("", "keygen", "bob")
	bob.must("", "register", "bob")

	seed := filepath.Join(t.TempDir(), "alice.nk")
	if err := os.WriteFile(seed, []byte(alice.must("", "nkey", "--as", "alice")), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH")}
	sub := start(t, natsCLI, env, "--server", srv.NATSURL, "--user", "alice", "--nkey", seed,
		"sub", "kez.chat.inbox.alice", "--count", "1")
	sub.await(sub.stderr, "Subscribing")
	// The CLI says "Subscribing" before its SUB reaches the server, and
	// nothing it does afterwards can be observed from here; so bob sends
	// again until one message arrives (--count 1 ends the CLI then).
	for i := 0; ; i++ {
		bob.must("", "send", "--as", "bob", "alice", "to the nats cli")
		if sub.within(sub.stdout, `Received on "kez.chat.inbox.alice"`, 2*time.Second) {
			break
		}
		if i == 20 {
			t.Fatal("the nats CLI received nothing on kez.chat.inbox.alice")
		}
	}
	// nats sub prints the headers, a blank line, then the stored message.
	sub.await(sub.stdout, "Kez-Seq: ")
	sub.await(sub.stdout, `"from":"bob","to":"alice"`)
	if err := sub.cmd.Wait(); err != nil {
		t.Fatalf("nats sub: %v", err)
	}

	// Without the key: refused.
	cmd := exec.CommandContext(t.Context(), natsCLI, "--server", srv.NATSURL, "--user", "alice",
		"sub", "kez.chat.inbox.alice", "--count", "1")
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(strings.ToLower(string(out)), "authorization") {
		t.Fatalf("nats sub without key: %v\n%s", err, out)
	}
}
