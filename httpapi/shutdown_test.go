package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
)

// TestGracefulShutdown shuts down the http.Server from HTTPServer while a
// stream is open and a send is half uploaded: the stream ends, the send
// finishes with 201, new connections are refused and Shutdown returns nil.
func TestGracefulShutdown(t *testing.T) {
	st := openSQLite(t)
	log := slog.New(slog.DiscardHandler)
	svc := chat.New(chat.Config{}, st, nil, nil, log)
	srv := New(Config{PublicURL: &url.URL{Scheme: "http", Host: "localhost"}}, svc, log)
	hsrv := srv.HTTPServer("127.0.0.1:0")

	// One event per send that reaches its handler. (Not the connection's
	// turning active: net/http drops a request whose head it read just as
	// Shutdown began, before any handler ran, which the client sees as a
	// reset and may retry; this test is about a send already in hand.)
	sending := make(chan struct{}, 16)
	handler := hsrv.Handler
	hsrv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/v1/messages" {
			sending <- struct{}{}
		}
		handler.ServeHTTP(w, r)
	})
	shutdownStarted := make(chan struct{})
	hsrv.RegisterOnShutdown(func() { close(shutdownStarted) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- hsrv.Serve(ln) }()
	t.Cleanup(func() { hsrv.Close() })

	e := &env{t: t, st: st, svc: svc, srv: srv, url: "http://" + ln.Addr().String()}
	alice, bob := e.aliceAndBob()

	// A stream, open and live.
	s := e.openStream(streamPath(bob, "bob", ""), nil)
	s.wantReady(0)

	// A send whose body is half uploaded when shutdown starts.
	body := sendBody("bob", "m1", `{"c":"in flight"}`)
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.url+"/v1/messages", pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(len(body))
	ts := now()
	req.Header.Set("Authorization", alice.authHeader(identity.SendString(identity.BodySHA256(body), ts), ts))
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	sent := make(chan response, 1)
	go func() {
		res, err := client.Do(req)
		if err != nil {
			t.Errorf("send: %v", err)
			sent <- response{}
			return
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		sent <- response{status: res.StatusCode, body: b}
	}()
	if _, err := pw.Write(body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	// The send is in its handler, reading the body.
	select {
	case <-sending:
	case <-time.After(streamTimeout):
		t.Fatal("the send never reached its handler")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- hsrv.Shutdown(ctx) }()
	<-shutdownStarted

	// The stream ends promptly, without waiting for the send.
	s.wantEnd()

	// The in-flight send completes.
	if _, err := pw.Write(body[len(body)/2:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if r := <-sent; r.status != http.StatusCreated {
		t.Fatalf("in-flight send: status %d body %s, want 201", r.status, r.body)
	}

	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if err := srv.WaitStreams(ctx); err != nil {
		t.Fatalf("stream handlers still running: %v", err)
	}
	if n := e.messageCount("bob"); n != 1 {
		t.Fatalf("bob has %d messages, want the in-flight one", n)
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Fatal("a new connection was accepted after shutdown")
	}
}
