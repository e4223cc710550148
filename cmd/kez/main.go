// Command kez is the kez-chat command line: it makes keys, registers handles,
// and sends and reads end-to-end encrypted messages through a kezd server,
// over HTTP (Server-Sent Events for live reading) or NATS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/kez-chat/kezd/client/envelope"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "kez:", describe(err))
		}
		os.Exit(exitCode(err))
	}
}

const usage = `usage: kez <command> [flags] [args]

commands:
  keygen <handle>                   make a key file for handle
  register <handle>                 register handle and its keys with the server
  whois <handle>[@domain]           show a handle's public keys
  send --as <handle> <to> [text…]   send an encrypted message (text from stdin when none)
  inbox --as <handle> [--since N]   read and decrypt messages
  tail --as <handle> [--nats]       follow messages live (SSE, or NATS with --nats)
  nkey --as <handle>                print the NATS user seed for the nats CLI
  rotate --as <handle>              replace the handle's keys (old ones kept to read old messages)
  delete-account --as <handle>      delete the handle and its inbox for good (asks; --yes)
  inbox --as <handle> --delete-through N   delete the messages up to seq N

common flags:
  --server URL   kezd server [KEZ_SERVER]; remembered in the key file at registration
  --key FILE     key file (default <config dir>/kez/<handle>.json)
  --json         machine-readable output
`

// run is kez without the process, so tests can drive it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{errors.New("no command given")}
	}
	e := &env{ctx: ctx, getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "keygen":
		return e.keygen(rest)
	case "register":
		return e.register(rest)
	case "whois":
		return e.whois(rest)
	case "send":
		return e.send(rest)
	case "inbox":
		return e.inbox(rest)
	case "tail":
		return e.tail(rest)
	case "nkey":
		return e.nkey(rest)
	case "rotate":
		return e.rotate(rest)
	case "delete-account":
		return e.deleteAccount(rest)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
}

// env is what every command runs with.
type env struct {
	ctx    context.Context
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	// previous are the loaded handle's keys from before rotations, newest
	// first, for messages sealed to them.
	previous []*envelope.Identity
}
