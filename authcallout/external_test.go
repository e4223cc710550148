package authcallout_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/client/kezdtest"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/natsapi"
)

// tool builds the main package pkg of go.mod's build list once per test
// binary (kezdtest.Binary); under -short the tests that need one skip.
func tool(t testing.TB, pkg, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skipf("-short: not building %s", pkg)
	}
	return kezdtest.Binary(t, pkg, name)
}

func natsServerBinary(t testing.TB) string {
	return tool(t, "github.com/nats-io/nats-server/v2", "nats-server")
}

// extServer is a nats-server process.
type extServer struct {
	clientURL string
	routeURL  string
	routed    <-chan struct{} // closed when a route to another server is up
	refused   <-chan struct{} // closed when another server refused this one's route
}

var (
	clientListen = regexp.MustCompile(`Listening for client connections on (\S+)`)
	routeListen  = regexp.MustCompile(`Listening for route connections on (\S+)`)
)

// runNATSServer starts nats-server with conf and waits until it says it is
// ready (and, with cluster, listens for routes), reading its ports from its log.
func runNATSServer(t testing.TB, conf string, cluster bool) extServer {
	t.Helper()
	cmd := exec.Command(natsServerBinary(t), "-c", conf)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan extServer, 1)
	routed, refused := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		<-done // all of the log is read before Wait closes the pipe
		cmd.Wait()
	})
	go func() {
		defer close(done)
		s := extServer{routed: routed, refused: refused}
		routeUp, routeRefused, isReady, sent := false, false, false, false
		var log strings.Builder
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			log.WriteString(line + "\n")
			if m := clientListen.FindStringSubmatch(line); m != nil {
				s.clientURL = "nats://" + m[1]
			}
			if m := routeListen.FindStringSubmatch(line); m != nil {
				s.routeURL = "nats://" + m[1]
			}
			if !routeUp && strings.Contains(line, "Route connection created") {
				routeUp = true
				close(routed)
			}
			if !routeRefused && strings.Contains(line, "Route Error 'Authorization Violation'") {
				routeRefused = true
				close(refused)
			}
			if strings.Contains(line, "Server is ready") {
				isReady = true
			}
			if isReady && (!cluster || s.routeURL != "") && !sent {
				sent = true
				ready <- s
			}
		}
		close(ready)
		if t.Failed() {
			t.Logf("nats-server %s log:\n%s", conf, log.String())
		}
	}()
	select {
	case s, ok := <-ready:
		if !ok {
			t.Fatalf("nats-server %s exited before it was ready", conf)
		}
		return s
	case <-time.After(30 * time.Second):
		t.Fatalf("nats-server %s not ready", conf)
	}
	return extServer{}
}

// writeAuthConf writes what `kezd nats-config` prints into dir/auth.conf,
// with the given auth timeout.
func writeAuthConf(t testing.TB, dir string, k deploykeys.Keys, timeout time.Duration) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "auth.conf"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = authcallout.WriteNATSConfig(f, authcallout.NATSConfigOptions{Keys: public(t, k), AuthTimeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
}

// writeClusterAuthConf writes what `kezd nats-config --cluster-routes`
// prints into dir/cluster-auth.conf.
func writeClusterAuthConf(t testing.TB, dir string, k deploykeys.Keys, routes ...string) {
	t.Helper()
	password, err := k.RoutePassword()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	err = authcallout.WriteClusterConfig(&b, authcallout.ClusterConfigOptions{Password: password, Routes: routes})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "cluster-auth.conf"), b.String())
}

func writeFile(t testing.TB, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDeployConfigs: the shipped configurations, with a generated auth.conf,
// are valid for the nats-server in go.mod.
func TestDeployConfigs(t *testing.T) {
	t.Parallel()
	bin := natsServerBinary(t)
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "cluster"), 0o700)
	for _, f := range []string{"single.conf", "cluster/node1.conf", "cluster/node2.conf", "cluster/node3.conf"} {
		b, err := os.ReadFile(filepath.Join("..", "deploy", "nats", f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, f), string(b))
	}
	k := testKeys(t)
	writeAuthConf(t, dir, k, authTimeout)
	writeClusterAuthConf(t, filepath.Join(dir, "cluster"), k,
		"nats://kez-nats-1:6222", "nats://kez-nats-2:6222", "nats://kez-nats-3:6222")
	for _, f := range []string{"single.conf", "cluster/node1.conf", "cluster/node2.conf", "cluster/node3.conf"} {
		out, err := exec.Command(bin, "-t", "-c", filepath.Join(dir, f)).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", f, err, out)
		}
	}
}

// TestExternalServer: a nats-server process configured only by the generated
// auth.conf; the callout service and kezd log in with their nkeys.
func TestExternalServer(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	dir := t.TempDir()
	writeAuthConf(t, dir, k, authTimeout)
	writeFile(t, filepath.Join(dir, "nats.conf"), "host: 127.0.0.1\nport: -1\ninclude \"auth.conf\"\n")
	s := runNATSServer(t, filepath.Join(dir, "nats.conf"), false)

	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	svc := startCallout(t, s.clientURL, k, db, authcallout.Config{})
	c := core(t, db, startKezd(t, s.clientURL, k))

	nc := login(t, s.clientURL, alice)
	sub, err := nc.SubscribeSync("kez.chat.inbox.alice")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	send(t, c, "alice", "alice", "note", `"to self"`)
	nextMsg(t, sub)

	if _, err := nats.Connect(s.clientURL, kezLogin("bob", alice.priv)...); err == nil {
		t.Error("alice's key logged in as bob")
	}
	if _, err := nats.Connect(s.clientURL, nats.UserInfo("alice", "")); err == nil {
		t.Error("logged in without a key")
	}
	if st := svc.Stats(); st.Authorized != 1 || st.Rejected != 2 {
		t.Errorf("stats %+v", st)
	}
}

// TestExternalCluster: three nats-server processes; kezd's callout service
// is on node 1, alice logs in on node 2 and receives what kezd publishes on
// node 3.
func TestExternalCluster(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	dir := t.TempDir()
	writeAuthConf(t, dir, k, authTimeout)
	// As in deploy/nats/cluster: routes authenticate with what
	// `kezd nats-config --cluster-routes` prints. Ports are random, so each
	// node gets the file for the routes known when it starts.
	node := func(i int, routes ...string) extServer {
		nodeDir := filepath.Join(dir, fmt.Sprintf("node%d", i))
		os.Mkdir(nodeDir, 0o700)
		writeClusterAuthConf(t, nodeDir, k, routes...)
		conf := filepath.Join(nodeDir, "nats.conf")
		writeFile(t, conf, fmt.Sprintf(`server_name: n%d
host: 127.0.0.1
port: -1
cluster {
  name: kez
  host: 127.0.0.1
  port: -1
  include "cluster-auth.conf"
}
include "../auth.conf"
`, i))
		return runNATSServer(t, conf, true)
	}
	n1 := node(1)
	n2 := node(2, n1.routeURL)
	n3 := node(3, n1.routeURL)

	<-n2.routed
	<-n3.routed

	// A server without the route credentials is refused by the cluster.
	strangerDir := filepath.Join(dir, "stranger")
	os.Mkdir(strangerDir, 0o700)
	writeFile(t, filepath.Join(strangerDir, "nats.conf"), fmt.Sprintf(`server_name: stranger
host: 127.0.0.1
port: -1
cluster {
  name: kez
  host: 127.0.0.1
  port: -1
  routes: [%s]
}
`, n1.routeURL))
	stranger := runNATSServer(t, filepath.Join(strangerDir, "nats.conf"), true)
	select {
	case <-stranger.refused:
	case <-time.After(30 * time.Second):
		t.Fatal("a server without the route credentials was not refused")
	}

	db := teststore.SQLite(t)
	alice := register(t, db, "alice")
	startCallout(t, n1.clientURL, k, db, authcallout.Config{})
	kezd := startKezd(t, n1.clientURL, k)
	r, err := natsapi.StartSend(context.Background(), kezd.Conn(), natsapi.SendConfig{}, core(t, db, kezd), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)

	// The responders' interest travels to node 2 over the route; a login
	// that arrives before it times out, so allow a few attempts.
	var nc *nats.Conn
	for attempt := 1; nc == nil; attempt++ {
		opts := append(kezLogin("alice", alice.priv), nats.Timeout(2*authTimeout))
		nc, err = nats.Connect(n2.clientURL, opts...)
		if err != nil && attempt == 3 {
			t.Fatalf("alice on node 2: %v", err)
		}
	}
	t.Cleanup(nc.Close)
	sub, err := nc.SubscribeSync("kez.chat.inbox.alice")
	if err != nil {
		t.Fatal(err)
	}
	nc.Flush()
	// Alice's subscription reaches node 1 on the route before her request
	// does, so the message kezd publishes on node 1 finds it.
	body := []byte(`{"to":"alice","id":"c1","envelope":"hello"}`)
	for attempt := 1; ; attempt++ {
		reply, err := nc.Request("kez.chat.send.alice", body, 2*authTimeout)
		if err == nil {
			if !strings.Contains(string(reply.Data), `"seq":1`) {
				t.Fatalf("reply %s", reply.Data)
			}
			break
		}
		if !errors.Is(err, nats.ErrNoResponders) || attempt == 100 {
			t.Fatalf("send over NATS on node 2: %v", err)
		}
	}
	m := nextMsg(t, sub)
	if !strings.Contains(string(m.Data), `"envelope":"hello"`) {
		t.Errorf("got %s", m.Data)
	}
}
