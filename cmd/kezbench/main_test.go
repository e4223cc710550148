package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store/pgtest"
)

func TestMain(m *testing.M) {
	// The memory scenario runs its idle clients as a child process of
	// this binary: the test binary, here.
	if len(os.Args) == 3 && os.Args[1] == childCommand {
		if err := runIdleClients(os.Args[2], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	pgtest.Main(m)
}

// TestSmoke runs every scenario, tiny, so that the command cannot rot. The
// numbers it prints mean nothing.
func TestSmoke(t *testing.T) {
	serverURL := pgtest.NewDatabase(t) // the bench creates its own database on this server
	getenv := func(k string) string {
		if k == envDatabaseURL {
			return serverURL
		}
		return ""
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	args := []string{"-duration", "150ms", "-senders", "2", "-streams", "3", "-rate", "100", "-idle", "20", "-settle", "10ms"}
	if err := run(ctx, args, getenv, &out, &errs); err != nil {
		t.Fatalf("run: %v\n%s", err, errs.String())
	}
	t.Log(out.String())
	for _, want := range []string{"deliveries/s, 1 stream", "deliveries/s, 3 stream", "POST→SSE p50", "POST→SSE p99", "per idle stream (20)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"nonsense"}, {"-duration", "0s"}, {"-senders", "0"}} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}
