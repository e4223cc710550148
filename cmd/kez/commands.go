package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
)

// common holds the flags most commands share.
type common struct {
	server string
	key    string
	json   bool
	as     string
}

func (e *env) flags(name string, c *common, withAs bool) *flag.FlagSet {
	fs := flag.NewFlagSet("kez "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.StringVar(&c.server, "server", e.getenv("KEZ_SERVER"), "kezd server URL [KEZ_SERVER]")
	fs.StringVar(&c.key, "key", "", "key file (default <config dir>/kez/<handle>.json)")
	fs.BoolVar(&c.json, "json", false, "machine-readable output")
	if withAs {
		fs.StringVar(&c.as, "as", e.getenv("KEZ_AS"), "the handle to act as [KEZ_AS]")
	}
	return fs
}

// parse parses flags anywhere among the arguments (kez register alice
// --server URL); "--" ends the flags.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// load reads the key file of c.as (or handle).
func (e *env) load(c *common, handle string) (*keyFile, *envelope.Identity, string, error) {
	if handle == "" {
		return nil, nil, "", usageError{errors.New("which handle? pass --as <handle>")}
	}
	if err := identity.ValidateHandle(handle); err != nil {
		return nil, nil, "", usageError{fmt.Errorf("%q: %v", handle, err)}
	}
	path, err := keyPath(e.getenv, c.key, handle)
	if err != nil {
		return nil, nil, "", err
	}
	k, err := readKeyFile(path)
	if err != nil {
		return nil, nil, "", err
	}
	if k.Handle != handle {
		return nil, nil, "", fmt.Errorf("key file %s is for %q, not %q", path, k.Handle, handle)
	}
	id, err := k.identity()
	if err != nil {
		return nil, nil, "", fmt.Errorf("key file %s: %w", path, err)
	}
	if e.previous, err = k.previous(); err != nil {
		return nil, nil, "", fmt.Errorf("key file %s: %w", path, err)
	}
	return k, id, path, nil
}

// client returns a client for --server, else KEZ_SERVER, else the server
// remembered in the key file.
func (e *env) client(c *common, k *keyFile) (*client.Client, error) {
	server := c.server
	if server == "" && k != nil {
		server = k.Server
	}
	if server == "" {
		return nil, usageError{errors.New("which server? pass --server URL or set KEZ_SERVER")}
	}
	u, err := url.Parse(server)
	if err != nil {
		return nil, usageError{fmt.Errorf("--server: %v", err)}
	}
	// WebFinger for the server's own domain goes to the server itself, so
	// whois works against a plain-HTTP development server.
	return client.New(server, client.WithWebFingerBase(func(domain string) string {
		if domain == u.Host {
			return u.Scheme + "://" + u.Host
		}
		return "https://" + domain
	}))
}

func (e *env) printJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

func (e *env) keygen(args []string) error {
	var c common
	fs := e.flags("keygen", &c, false)
	force := fs.Bool("force", false, "replace an existing key file")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{errors.New("usage: kez keygen <handle> [--key FILE] [--force]")}
	}
	id, err := envelope.Generate(pos[0])
	if err != nil {
		return usageError{fmt.Errorf("%q: %v", pos[0], err)}
	}
	path, err := keyPath(e.getenv, c.key, id.Handle)
	if err != nil {
		return err
	}
	if err := writeKeyFile(path, newKeyFile(id, c.server), *force); err != nil {
		return err
	}
	if c.json {
		return e.printJSON(map[string]string{"handle": id.Handle, "key_file": path, "signing_key": id.SigningKeyHex(), "encryption_key": id.EncryptionKeyHex()})
	}
	fmt.Fprintf(e.stdout, "wrote %s for %s\nsigning key    %s\nencryption key %s\n", path, id.Handle, id.SigningKeyHex(), id.EncryptionKeyHex())
	return nil
}

func (e *env) register(args []string) error {
	var c common
	fs := e.flags("register", &c, false)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{errors.New("usage: kez register <handle> [--server URL]")}
	}
	k, id, path, err := e.load(&c, pos[0])
	if err != nil {
		return err
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	h, err := cl.Register(e.ctx, id)
	if err != nil {
		return err
	}
	if k.Server != cl.BaseURL() {
		k.Server = cl.BaseURL()
		if err := writeKeyFile(path, k, true); err != nil {
			return fmt.Errorf("registered, but could not remember the server: %w", err)
		}
	}
	if c.json {
		return e.printJSON(h)
	}
	fmt.Fprintf(e.stdout, "registered %s at %s\n", h.Handle, cl.BaseURL())
	return nil
}

func (e *env) whois(args []string) error {
	var c common
	fs := e.flags("whois", &c, false)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{errors.New("usage: kez whois <handle>[@domain]")}
	}
	handle, domain, err := client.SplitAddress(pos[0])
	if err != nil {
		return err
	}
	var k *keyFile
	if c.server == "" {
		// Any local key file that remembers a server will do.
		if path, perr := keyPath(e.getenv, c.key, handle); perr == nil {
			k, _ = readKeyFile(path)
		}
	}
	if domain != "" {
		cl, err := e.client(&c, k)
		if err != nil {
			if c.server != "" || k != nil {
				return err
			}
			cl, _ = client.New("https://" + domain)
		}
		a, err := cl.Resolve(e.ctx, pos[0])
		if err != nil {
			return err
		}
		if c.json {
			return e.printJSON(a)
		}
		fmt.Fprintf(e.stdout, "%s@%s\nsigning key    %s\nencryption key %s\n", a.Handle, a.Domain, a.SigningKey, a.EncryptionKey)
		for _, l := range []struct{ name, href string }{{"inbox", a.Inbox}, {"stream", a.Stream}, {"nats", a.NATS}} {
			if l.href != "" {
				fmt.Fprintf(e.stdout, "%-14s %s\n", l.name, l.href)
			}
		}
		return nil
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	h, err := cl.Lookup(e.ctx, handle)
	if err != nil {
		return err
	}
	if c.json {
		return e.printJSON(h)
	}
	fmt.Fprintf(e.stdout, "%s\nsigning key    %s\nencryption key %s\nregistered     %s\n", h.Handle, h.SigningKey, h.EncryptionKey, h.CreatedAt.Format(time.RFC3339))
	return nil
}

func (e *env) send(args []string) error {
	var c common
	fs := e.flags("send", &c, true)
	// Flags come before <to>: the text is never parsed as flags.
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	pos := fs.Args()
	if len(pos) < 1 {
		return usageError{errors.New("usage: kez send --as <handle> <to> [text…] (text from stdin when none)")}
	}
	to, domain, err := client.SplitAddress(pos[0])
	if err != nil {
		return err
	}
	k, id, _, err := e.load(&c, c.as)
	if err != nil {
		return err
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	if domain != "" {
		if u, _ := url.Parse(cl.BaseURL()); u == nil || u.Host != domain {
			return fmt.Errorf("%s is on another server; kez sends through %s only", pos[0], cl.BaseURL())
		}
	}
	text := strings.Join(pos[1:], " ")
	if len(pos) == 1 {
		b, err := io.ReadAll(io.LimitReader(e.stdin, envelope.MaxPlaintext+1))
		if err != nil {
			return fmt.Errorf("read stdin: %w", err)
		}
		text = strings.TrimRight(string(b), "\n")
	}
	if text == "" {
		return usageError{errors.New("nothing to send")}
	}
	s, err := cl.Send(e.ctx, id, to, []byte(text))
	if err != nil {
		return err
	}
	if c.json {
		return e.printJSON(s)
	}
	fmt.Fprintf(e.stdout, "sent to %s (seq %d)\n", s.To, s.Seq)
	return nil
}

// shown is a message as kez prints it.
type shown struct {
	Seq    int64     `json:"seq"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	ID     string    `json:"id"`
	SentAt time.Time `json:"sent_at"`
	Text   string    `json:"text,omitempty"`
	Error  string    `json:"error,omitempty"`
}

// show decrypts m and prints it, or why it cannot be read.
func (e *env) show(c *common, cl *client.Client, id *envelope.Identity, m client.Message) error {
	s := shown{Seq: m.Seq, From: m.From, To: m.To, ID: m.ID, SentAt: m.SentAt}
	o, err := cl.Open(e.ctx, id, m)
	for _, old := range e.previous {
		if !notForThisKey(err) {
			break
		}
		// Sealed before a rotation: try the keys kept from before.
		o, err = cl.Open(e.ctx, old, m)
	}
	if err != nil {
		if e.ctx.Err() != nil {
			return e.ctx.Err()
		}
		s.Error = describeOpen(err)
	} else {
		s.Text = string(o.Plaintext)
	}
	if c.json {
		return e.printJSON(s)
	}
	if s.Error != "" {
		_, err = fmt.Fprintf(e.stdout, "#%d %s %s: [%s]\n", s.Seq, s.SentAt.Local().Format("15:04:05"), s.From, s.Error)
		return err
	}
	_, err = fmt.Fprintf(e.stdout, "#%d %s %s: %s\n", s.Seq, s.SentAt.Local().Format("15:04:05"), s.From, s.Text)
	return err
}

func (e *env) inbox(args []string) error {
	var c common
	fs := e.flags("inbox", &c, true)
	since := fs.Int64("since", 0, "show messages after this seq")
	limit := fs.Int("limit", 0, "at most this many messages (server default 100)")
	wait := fs.Duration("wait", 0, "when there is nothing new, wait up to this long (at most 30s)")
	through := fs.Int64("delete-through", -1, "delete the messages with seq up to N (shared by every device of the handle) instead of reading")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	k, id, _, err := e.load(&c, c.as)
	if err != nil {
		return err
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	if *through >= 0 {
		d, err := cl.DeleteThrough(e.ctx, id, *through)
		if err != nil {
			return err
		}
		if c.json {
			return e.printJSON(d)
		}
		fmt.Fprintf(e.stdout, "deleted %d messages\n", d.Deleted)
		return nil
	}
	p, err := cl.Poll(e.ctx, id, client.PollOptions{Since: *since, Limit: *limit, Wait: *wait})
	if err != nil {
		return err
	}
	if p.Gap != nil {
		fmt.Fprintln(e.stderr, gapText(*p.Gap))
	}
	for _, m := range p.Messages {
		if err := e.show(&c, cl, id, m); err != nil {
			return err
		}
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(e.stderr, "skipped a message that could not be read: %v\n", s.Err)
	}
	if !c.json && len(p.Messages) == 0 && len(p.Skipped) == 0 {
		fmt.Fprintln(e.stderr, "no new messages")
	}
	return nil
}

// gapText tells the user of messages they will never see: the server
// deleted them (its retention, or a delete-through from one of their
// devices) before this device read them.
func gapText(g client.Gap) string {
	const why = "(by the server's retention, or by a delete from one of your devices)"
	if g.First == g.Last {
		return fmt.Sprintf("message %d was deleted from the server before you read it %s", g.First, why)
	}
	return fmt.Sprintf("messages %d–%d were deleted from the server before you read them %s", g.First, g.Last, why)
}

func (e *env) tail(args []string) error {
	var c common
	fs := e.flags("tail", &c, true)
	useNATS := fs.Bool("nats", false, "follow over NATS, logged in with the kez key")
	natsURL := fs.String("nats-url", e.getenv("KEZ_NATS_URL"), "NATS URL for --nats (default: the server's WebFinger nats link) [KEZ_NATS_URL]")
	since := fs.Int64("since", client.FromNow, "replay messages after this seq first (default: only new ones)")
	if _, err := parse(fs, args); err != nil {
		return err
	}
	k, id, _, err := e.load(&c, c.as)
	if err != nil {
		return err
	}
	cl, err := e.client(&c, k)
	if err != nil {
		return err
	}
	if *useNATS {
		return e.tailNATS(&c, cl, id, *natsURL, *since)
	}
	err = cl.Stream(e.ctx, id, client.StreamOptions{
		Since: *since,
		OnState: func(s client.State, err error) {
			if err != nil {
				fmt.Fprintf(e.stderr, "%s (%s)\n", s, describe(err))
				return
			}
			fmt.Fprintln(e.stderr, s)
		},
		OnGap: func(g client.Gap) { fmt.Fprintln(e.stderr, gapText(g)) },
	}, func(m client.Message) error { return e.show(&c, cl, id, m) })
	if e.ctx.Err() != nil {
		return nil // interrupted: a normal end
	}
	return err
}

func (e *env) tailNATS(c *common, cl *client.Client, id *envelope.Identity, natsURL string, since int64) error {
	if natsURL == "" {
		u, _ := url.Parse(cl.BaseURL())
		a, err := cl.Resolve(e.ctx, id.Handle+"@"+u.Host)
		if err != nil {
			return fmt.Errorf("find the server's NATS address (pass --nats-url): %s", describe(err))
		}
		if a.NATS == "" {
			return errors.New("the server does not advertise NATS; pass --nats-url")
		}
		natsURL = a.NATS
	}
	fmt.Fprintln(e.stderr, client.StateConnecting)
	nc, err := client.ConnectNATS(natsURL, id,
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				fmt.Fprintf(e.stderr, "%s (%v)\n", client.StateReconnecting, err)
			} else {
				fmt.Fprintln(e.stderr, client.StateReconnecting)
			}
		}),
		nats.ReconnectHandler(func(*nats.Conn) { fmt.Fprintln(e.stderr, client.StateLive) }),
	)
	if err != nil {
		return err
	}
	defer nc.Close()
	// StreamNATS fills from the store whatever NATS missed (a reconnect, a
	// message published by an instance that then died), so the terminal
	// shows every message once and in order, as over SSE.
	err = cl.StreamNATS(e.ctx, nc, id, client.NATSStreamOptions{
		Since:  since,
		OnLive: func() { fmt.Fprintln(e.stderr, client.StateLive) },
		OnGap:  func(g client.Gap) { fmt.Fprintln(e.stderr, gapText(g)) },
	}, func(m client.Message) error { return e.show(c, cl, id, m) })
	if e.ctx.Err() != nil {
		return nil // interrupted: a normal end
	}
	return err
}

func (e *env) nkey(args []string) error {
	var c common
	fs := e.flags("nkey", &c, true)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	_, id, _, err := e.load(&c, c.as)
	if err != nil {
		return err
	}
	seed, err := client.NATSUserSeed(id)
	if err != nil {
		return err
	}
	if c.json {
		pub, err := client.NATSUserKey(id)
		if err != nil {
			return err
		}
		return e.printJSON(map[string]string{"handle": id.Handle, "user": pub, "seed": seed})
	}
	_, err = fmt.Fprintln(e.stdout, seed)
	return err
}
