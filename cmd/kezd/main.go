// Command kezd is the kez-chat messaging server: handle registry, signed
// sending, polling, Server-Sent Events and WebFinger over HTTP, with live
// delivery and native logins over NATS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "kezd:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks a mistake in the command line: exit code 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const usage = `usage: kezd <command> [flags]

commands:
  serve        run the server (kezd serve -h lists its flags)
  check-config validate serve's flags and environment, print a summary, and exit
  healthcheck  exit 0 when a kezd answers its health check (for container images)
  nats-config  print a nats-server configuration matching this deployment's keys
  version      print the version
`

// run is kezd without the process: tests start the whole program with it.
// It returns when ctx is cancelled (after a graceful shutdown) or on error.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	switch args[0] {
	case "serve":
		cfg, err := parseServe(args[1:], getenv, stderr)
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return err
			}
			return usageError{err}
		}
		return serve(ctx, cfg, stderr, nil)
	case "check-config":
		return checkConfig(args[1:], getenv, stdout, stderr)
	case "healthcheck":
		return healthcheck(args[1:], getenv, stdout, stderr)
	case "nats-config":
		return natsConfig(args[1:], getenv, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "kezd", version())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", args[0])}
	}
}

// version is the module version, or the VCS revision for a source build.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && (v == "" || v == "(devel)") {
			v = s.Value
			if len(v) > 12 {
				v = v[:12]
			}
		}
	}
	if v == "" {
		v = "(devel)"
	}
	return v
}
