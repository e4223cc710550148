package httpapi

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// failingListener fails its first Accept as a process out of descriptors does.
type failingListener struct {
	net.Listener
	once sync.Once
}

func (l *failingListener) Accept() (net.Conn, error) {
	var err error
	l.once.Do(func() {
		err = &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	})
	if err != nil {
		return nil, err
	}
	return l.Listener.Accept()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// An accept error such as EMFILE is logged at warn, not left to net/http's
// debug-level retry line (defect: a server out of descriptors said nothing).
func TestAcceptErrorsLoggedAtWarn(t *testing.T) {
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv := New(Config{}, nil, log)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := srv.HTTPServer("")
	go hs.Serve(srv.AcceptLogger(&failingListener{Listener: ln}))
	t.Cleanup(func() { hs.Close() })
	// net/http retries the failed accept; this request is served after it.
	res, err := http.Get(fmt.Sprintf("http://%s/healthz", ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	out := logs.String()
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "too many open files") {
		t.Fatalf("log after an EMFILE accept error:\n%s\nwant a warning naming it", out)
	}
	if !strings.Contains(out, "http accept recovered") {
		t.Fatalf("log:\n%s\nwant the recovery once accepts work again", out)
	}
}
