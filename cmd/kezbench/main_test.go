package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/store/pgtest"
)

func TestMain(m *testing.M) {
	// The servers and the idle clients run as child processes of this
	// binary: the test binary, here.
	if ran, err := child(os.Args[1:]); ran {
		if err != nil {
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
	profiles := t.TempDir()
	args := []string{"-duration", "150ms", "-count", "1", "-senders", "2", "-streams", "3", "-rate", "100", "-idle", "20", "-storm", "4", "-settle", "10ms", "-idle-window", "10ms", "-profile", profiles}
	if err := run(ctx, args, getenv, &out, &errs); err != nil {
		t.Fatalf("run: %v\n%s", err, errs.String())
	}
	t.Log(out.String())
	for _, want := range []string{"deliveries/s, 1 stream", "deliveries/s, 3 stream", "POST→SSE p50", "POST→SSE p99", "server CPU per delivery", "group-commit batch", "stream opens/s, 20", "per idle stream (20)"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	for _, server := range []string{"kezd", "baseline"} {
		for _, kind := range []string{"cpu", "allocs", "allocs-before", "idle-heap", "open-cpu", "idle-cpu"} {
			if fi, err := os.Stat(filepath.Join(profiles, server+"."+kind+".pprof")); err != nil || fi.Size() == 0 {
				t.Errorf("%s's %s profile: %v", server, kind, err)
			}
		}
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"nonsense"}, {"-duration", "0s"}, {"-senders", "0"}, {"-baseline-seqs", "none"}} {
		if _, err := parseFlags(args, &bytes.Buffer{}); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		}
	}
}
