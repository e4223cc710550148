package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/deploykeys"
	"github.com/kez-chat/kezd/httpapi"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/ratelimit"
)

// config is everything `kezd serve` is told, parsed once from flags whose
// defaults come from KEZ_* environment variables. The settings of the core,
// the HTTP API, the NATS connection and the auth callout are parsed straight
// into those packages' own configs; serve adds only what it alone knows (the
// store, the rate limiter, the bound address, the deployment's keys).
type config struct {
	Listen       string
	AdminListen  string // host:port, or "off"
	PublicURL    *url.URL
	PublicURLSet bool // given, not derived from --listen
	DatabaseURL  string
	DataDir      string
	LogLevel     slog.Level

	ShutdownTimeout time.Duration
	DrainDelay      time.Duration

	// RateLimits is false with --rate-limits off; Limits are then ignored.
	RateLimits bool
	Limits     map[ratelimit.Name]ratelimit.Limit

	// Chat is the core's: clock skew, republishing, quotas, retention and
	// stream memory.
	Chat chat.Config
	// HTTP is the API's: WebFinger aliases, pings, stream and long-poll
	// caps, trusted proxies.
	HTTP httpapi.Config
	// NATS is the broker's: the external server and its credentials, or the
	// embedded one's listeners and cluster. ClusterUser and ClusterPassword
	// are as given (empty: RouteUser and the password derived from the
	// deployment's keys); WebSocketAllowedOrigins empty means the public
	// URL's, unless NATSWebSocketAnyOrigin.
	NATS                   broker.Config
	NATSWebSocketAnyOrigin bool // --nats-websocket-origins '*'
	// NATSPublicURL is the NATS URL WebFinger advertises; empty, the
	// broker's client URL.
	NATSPublicURL string
	// Callout is the auth callout's: its users' lifetime and connection cap.
	Callout authcallout.Config
	// Seeds are the deployment's NATS keys when given as flags.
	Seeds deploykeys.Seeds
}

// envFlags registers flags on fs whose defaults are read from getenv.
type envFlags struct {
	fs      *flag.FlagSet
	getenv  func(string) string
	errs    []error
	secrets []secretFlag
}

// secretFlag is a flag whose environment value is applied after parsing,
// not as the flag's default, so that -h never prints it.
type secretFlag struct {
	p         *string
	name, env string
}

// secret registers a flag for a secret (a seed, a password, a token, or a
// URL that may hold a password).
func (e *envFlags) secret(p *string, name, env, usage string) {
	e.fs.StringVar(p, name, "", fmt.Sprintf("%s [%s]", usage, env))
	e.secrets = append(e.secrets, secretFlag{p: p, name: name, env: env})
}

// parse parses args, then fills the secrets not given as flags from the
// environment.
func (e *envFlags) parse(args []string, stderr io.Writer) error {
	if err := parseFlags(e.fs, args, stderr); err != nil {
		return err
	}
	set := map[string]bool{}
	e.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, sf := range e.secrets {
		if v := e.getenv(sf.env); v != "" && !set[sf.name] {
			*sf.p = v
		}
	}
	return nil
}

func (e *envFlags) str(p *string, name, env, def, usage string) {
	if v := e.getenv(env); v != "" {
		def = v
	}
	e.fs.StringVar(p, name, def, fmt.Sprintf("%s [%s]", usage, env))
}

func (e *envFlags) dur(p *time.Duration, name, env string, def time.Duration, usage string) {
	if v := e.getenv(env); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("invalid --%s (from %s=%q): %v", name, env, v, err))
		} else {
			def = d
		}
	}
	e.fs.DurationVar(p, name, def, fmt.Sprintf("%s [%s]", usage, env))
}

func (e *envFlags) num(p *int, name, env string, def int, usage string) {
	if v := e.getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("invalid --%s (from %s=%q): not a whole number", name, env, v))
		} else {
			def = n
		}
	}
	e.fs.IntVar(p, name, def, fmt.Sprintf("%s [%s]", usage, env))
}

// size registers a flag for a number of bytes, given as a whole number
// with an optional KiB, MiB or GiB suffix.
func (e *envFlags) size(p *int64, name, env string, def int64, usage string) {
	*p = def
	if v := e.getenv(env); v != "" {
		n, err := parseSize(v)
		if err != nil {
			e.errs = append(e.errs, fmt.Errorf("invalid --%s (from %s=%q): %v", name, env, v, err))
		} else {
			*p = n
		}
	}
	e.fs.Func(name, fmt.Sprintf("%s (default %s) [%s]", usage, formatSize(*p), env), func(v string) error {
		n, err := parseSize(v)
		if err == nil {
			*p = n
		}
		return err
	})
}

var sizeUnits = []struct {
	suffix string
	n      int64
}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

// parseSize reads "512MiB", "256KiB", "1GiB" or a plain number of bytes.
func parseSize(v string) (int64, error) {
	unit := int64(1)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			v, unit = num, u.n
			break
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/unit {
		return 0, errors.New("want a whole number of bytes, optionally with KiB, MiB or GiB")
	}
	return n * unit, nil
}

// formatSize writes n in the largest unit that divides it.
func formatSize(n int64) string {
	for _, u := range sizeUnits {
		if n != 0 && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.suffix
		}
	}
	return "0"
}

// parseServe parses the serve subcommand's arguments. The error is one line
// naming the offending flag.
func parseServe(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("kezd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	e := &envFlags{fs: fs, getenv: getenv}
	var publicURL, logLevel, routes, aliases, wsOrigins string
	e.str(&c.Listen, "listen", "KEZ_LISTEN", ":8080", "HTTP listen address")
	e.str(&c.AdminListen, "admin-listen", "KEZ_ADMIN_LISTEN", DefaultAdminListen, "operator listener (GET /metrics), or off; keep it off the public network")
	e.str(&publicURL, "public-url", "KEZ_PUBLIC_URL", "", "URL clients use; its host is the WebFinger domain (default derived from --listen)")
	e.str(&aliases, "webfinger-aliases", "KEZ_WEBFINGER_ALIASES", "", "comma-separated further domains WebFinger answers for (besides the public URL's)")
	e.secret(&c.DatabaseURL, "database-url", "KEZ_DATABASE_URL", "postgres:// URL; empty uses the embedded SQLite store in --data-dir")
	e.str(&c.DataDir, "data-dir", "KEZ_DATA_DIR", "./kez-data", "directory for the embedded store and generated keys")
	e.dur(&c.Chat.Skew, "auth-skew", "KEZ_AUTH_SKEW", chat.DefaultSkew, "accepted clock difference for signed requests")
	e.str(&logLevel, "log-level", "KEZ_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	e.dur(&c.HTTP.PingInterval, "sse-ping", "KEZ_SSE_PING", httpapi.DefaultPingInterval, "interval of SSE keep-alive comments")
	e.num(&c.HTTP.MaxStreams, "max-streams", "KEZ_MAX_STREAMS", httpapi.DefaultMaxStreams, "open SSE streams this instance accepts in all (then 429)")
	e.num(&c.HTTP.MaxStreamsPerHandle, "max-streams-per-handle", "KEZ_MAX_STREAMS_PER_HANDLE", httpapi.DefaultMaxStreamsPerHandle, "open SSE streams per handle (then 429; deployment-wide on Postgres); at least 8")
	e.num(&c.HTTP.MaxStreamsPerIP, "max-streams-per-ip", "KEZ_MAX_STREAMS_PER_IP", httpapi.DefaultMaxStreamsPerIP, "open SSE streams per client IP (IPv6: per /64) (then 429; deployment-wide on Postgres)")
	e.num(&c.HTTP.MaxPolls, "max-polls", "KEZ_MAX_POLLS", httpapi.DefaultMaxPolls, "waiting long-polls this instance accepts in all (then 429)")
	e.num(&c.HTTP.MaxPollsPerHandle, "max-polls-per-handle", "KEZ_MAX_POLLS_PER_HANDLE", httpapi.DefaultMaxPollsPerHandle, "waiting long-polls per handle (then 429; deployment-wide on Postgres)")
	e.num(&c.HTTP.MaxPollsPerIP, "max-polls-per-ip", "KEZ_MAX_POLLS_PER_IP", httpapi.DefaultMaxPollsPerIP, "waiting long-polls per client IP (then 429; deployment-wide on Postgres)")
	var rateLimits, trusted string
	e.str(&rateLimits, "rate-limits", "KEZ_RATE_LIMITS", "on", "on, or off to turn every rate limit off (not the stream and long-poll caps)")
	e.str(&trusted, "trusted-proxies", "KEZ_TRUSTED_PROXIES", "", "comma-separated proxy addresses or CIDRs whose X-Forwarded-For names the client IP")
	limitFlags := make(map[ratelimit.Name]*string)
	for _, lf := range limitFlagList {
		v := new(string)
		e.str(v, lf.flag, lf.env, ratelimit.Defaults[lf.name].String(), lf.usage+" (N/duration, or off)")
		limitFlags[lf.name] = v
	}
	e.dur(&c.DrainDelay, "drain-delay", "KEZ_DRAIN_DELAY", 0, "on shutdown, how long to report not ready (503 on /readyz) and close keep-alive connections while still serving, so a load balancer moves away before the listener closes")
	inboxMessages := int(DefaultInboxMaxMessages)
	var pageBytes int64
	e.num(&inboxMessages, "inbox-max-messages", "KEZ_INBOX_MAX_MESSAGES", inboxMessages, "messages an inbox holds at most (then 429 inbox_full); 0 for no limit")
	e.size(&c.Chat.Quota.Bytes, "inbox-max-bytes", "KEZ_INBOX_MAX_BYTES", DefaultInboxMaxBytes, "bytes of envelopes an inbox holds at most (then 429 inbox_full); 0 for no limit")
	e.dur(&c.Chat.Retention, "retention", "KEZ_RETENTION", DefaultRetention, "how long messages are kept; 0 keeps them forever")
	e.dur(&c.Chat.DedupWindow, "dedup-window", "KEZ_DEDUP_WINDOW", DefaultDedupWindow, "how long after a message is deleted (delete-through, retention) a retry of its id is still its 200 duplicate rather than a new message; 0 remembers ids forever")
	e.size(&pageBytes, "stream-page-bytes", "KEZ_STREAM_PAGE_BYTES", chat.DefaultStreamPageBytes, "envelope bytes one SSE stream holds at a time (at least 64KiB)")
	e.size(&c.Chat.CatchUpBudget, "catch-up-budget", "KEZ_CATCH_UP_BUDGET", chat.DefaultCatchUpBudget, "envelope bytes all SSE streams catching up hold together")
	e.dur(&c.Chat.CatchUpWait, "catch-up-wait", "KEZ_CATCH_UP_WAIT", chat.DefaultCatchUpWait, "how long a stream waits for the catch-up budget before it ends (the client resumes)")
	e.dur(&c.Chat.DrainTimeout, "stream-drain-timeout", "KEZ_STREAM_DRAIN_TIMEOUT", chat.DefaultDrainTimeout, "how long a stream may take to write one catch-up page before it ends (the client resumes)")
	e.dur(&c.ShutdownTimeout, "shutdown-timeout", "KEZ_SHUTDOWN_TIMEOUT", 20*time.Second, "how long in-flight requests may take to finish on shutdown")

	e.str(&c.NATS.Listen, "nats-listen", "KEZ_NATS_LISTEN", "127.0.0.1:4222", "embedded NATS client address, or off for no listener")
	e.secret(&c.NATS.URL, "nats-url", "KEZ_NATS_URL", "external NATS URL(s), comma-separated; empty runs the embedded server")
	e.str(&c.NATS.CredsFile, "nats-creds", "KEZ_NATS_CREDS", "", "external NATS: user credentials file")
	e.str(&c.NATS.NkeySeedFile, "nats-nkey", "KEZ_NATS_NKEY", "", "external NATS: nkey seed file")
	e.str(&c.NATS.User, "nats-user", "KEZ_NATS_USER", "", "external NATS: user name")
	e.secret(&c.NATS.Password, "nats-password", "KEZ_NATS_PASSWORD", "external NATS: password")
	e.str(&c.NATS.SystemUser, "nats-system-user", "KEZ_NATS_SYSTEM_USER", "", "external NATS: a system-account user, to disconnect the logins of revoked keys and cap a handle's connections")
	e.secret(&c.NATS.SystemPassword, "nats-system-password", "KEZ_NATS_SYSTEM_PASSWORD", "external NATS: the system-account user's password")
	e.secret(&c.NATS.Token, "nats-token", "KEZ_NATS_TOKEN", "external NATS: token")
	e.str(&c.NATS.TLSCA, "nats-ca", "KEZ_NATS_CA", "", "external NATS: CA certificate file")
	e.str(&c.NATS.TLSCert, "nats-cert", "KEZ_NATS_CERT", "", "external NATS: client certificate file")
	e.str(&c.NATS.TLSKey, "nats-key", "KEZ_NATS_KEY", "", "external NATS: client key file")
	e.str(&c.NATS.ClusterListen, "nats-cluster-listen", "KEZ_NATS_CLUSTER_LISTEN", "", "embedded NATS cluster (route) address")
	e.secret(&routes, "nats-routes", "KEZ_NATS_ROUTES", "embedded NATS: comma-separated route URLs of the other instances (nats://host:port)")
	e.str(&c.NATS.ClusterName, "nats-cluster-name", "KEZ_NATS_CLUSTER_NAME", "kezd", "embedded NATS cluster name")
	e.str(&c.NATS.ClusterUser, "nats-cluster-user", "KEZ_NATS_CLUSTER_USER", "", "embedded NATS: user the cluster's routes log in as (default kezd-route)")
	e.secret(&c.NATS.ClusterPassword, "nats-cluster-password", "KEZ_NATS_CLUSTER_PASSWORD", "embedded NATS: route password (default derived from the NATS keys; prefer the environment)")
	e.str(&c.NATS.WebSocketListen, "nats-websocket-listen", "KEZ_NATS_WEBSOCKET_LISTEN", "", "embedded NATS WebSocket address for browsers (off when empty)")
	e.str(&wsOrigins, "nats-websocket-origins", "KEZ_NATS_WEBSOCKET_ORIGINS", "", "comma-separated origins (https://host[:port]) whose pages may use the NATS WebSocket, or * for any (default: the public URL's origin)")
	e.str(&c.NATSPublicURL, "nats-public-url", "KEZ_NATS_PUBLIC_URL", "", "NATS URL advertised to clients in WebFinger (default derived from --nats-listen)")

	e.secret(&c.Seeds.Issuer, "callout-issuer-seed", "KEZ_CALLOUT_ISSUER_SEED", "auth callout issuer account seed (default: generated in --data-dir)")
	e.secret(&c.Seeds.XKey, "callout-xkey-seed", "KEZ_CALLOUT_XKEY_SEED", "auth callout curve seed (default: generated in --data-dir)")
	e.secret(&c.Seeds.Service, "callout-service-seed", "KEZ_CALLOUT_SERVICE_SEED", "auth callout service user seed (default: generated in --data-dir)")
	e.secret(&c.Seeds.App, "callout-app-seed", "KEZ_CALLOUT_APP_SEED", "kezd's own NATS user seed (default: generated in --data-dir)")
	e.num(&c.Callout.MaxConnsPerHandle, "nats-max-conns-per-handle", "KEZ_NATS_MAX_CONNS_PER_HANDLE", authcallout.DefaultMaxConnsPerHandle, "NATS connections a handle may hold (then its login is refused): in the deployment with Postgres or with --nats-url and --nats-system-user; on the one server with SQLite and embedded NATS; not with --nats-url alone")
	e.dur(&c.Callout.TTL, "nats-user-ttl", "KEZ_NATS_USER_TTL", time.Hour, "lifetime of the NATS user JWTs the auth callout issues")
	e.dur(&c.Chat.RepublishAfter, "republish-after", "KEZ_REPUBLISH_AFTER", chat.DefaultRepublishAfter, "how long a stored message may go without a confirmed NATS publish before any instance publishes it again")

	if err := e.parse(args, stderr); err != nil {
		return config{}, err
	}
	if len(e.errs) > 0 {
		return config{}, e.errs[0]
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	c.Chat.Quota.Messages = int64(inboxMessages)
	c.Chat.StreamPageBytes = int(pageBytes)
	if err := checkLimits(c); err != nil {
		return config{}, err
	}
	if err := c.LogLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return config{}, fmt.Errorf("invalid --log-level %q: want debug, info, warn or error", logLevel)
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return config{}, fmt.Errorf("invalid --listen %q: want host:port", c.Listen)
	}
	if c.AdminListen != "off" {
		if _, port, err := net.SplitHostPort(c.AdminListen); err != nil || !validPort(port) || port == "-1" {
			return config{}, fmt.Errorf("invalid --admin-listen %q: want host:port or off", c.AdminListen)
		}
	}
	if c.Chat.Skew <= 0 {
		return config{}, fmt.Errorf("invalid --auth-skew %s: must be positive", c.Chat.Skew)
	}
	if c.HTTP.MaxStreams < 1 {
		return config{}, fmt.Errorf("invalid --max-streams %d: must be positive", c.HTTP.MaxStreams)
	}
	if c.HTTP.MaxStreamsPerHandle < 8 {
		// PROTOCOL.md: a server may cap streams per handle, at no fewer than 8.
		return config{}, fmt.Errorf("invalid --max-streams-per-handle %d: must be at least 8", c.HTTP.MaxStreamsPerHandle)
	}
	for _, n := range []struct {
		flag string
		v    int
	}{{"max-streams-per-ip", c.HTTP.MaxStreamsPerIP}, {"max-polls", c.HTTP.MaxPolls}, {"max-polls-per-handle", c.HTTP.MaxPollsPerHandle}, {"max-polls-per-ip", c.HTTP.MaxPollsPerIP}} {
		if n.v < 1 {
			return config{}, fmt.Errorf("invalid --%s %d: must be positive", n.flag, n.v)
		}
	}
	switch rateLimits {
	case "on":
		c.RateLimits = true
	case "off":
	default:
		return config{}, fmt.Errorf("invalid --rate-limits %q: want on or off", rateLimits)
	}
	c.Limits = make(map[ratelimit.Name]ratelimit.Limit)
	for _, lf := range limitFlagList {
		l, err := ratelimit.ParseLimit(*limitFlags[lf.name])
		if err != nil {
			return config{}, fmt.Errorf("invalid --%s %v", lf.flag, err)
		}
		c.Limits[lf.name] = l
	}
	if l := c.Limits[ratelimit.PairBytes]; l.Burst > 0 && l.Burst < protocol.MaxEnvelope {
		return config{}, fmt.Errorf("invalid --rate-pair-bytes %s: must allow at least one largest envelope (%d bytes)", l, protocol.MaxEnvelope)
	}
	for _, p := range splitList(trusted) {
		pfx, err := netip.ParsePrefix(p)
		if err != nil {
			addr, aerr := netip.ParseAddr(p)
			if aerr != nil {
				return config{}, fmt.Errorf("invalid --trusted-proxies entry %q: want an IP address or CIDR", p)
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		c.HTTP.TrustedProxies = append(c.HTTP.TrustedProxies, pfx.Masked())
	}
	if c.HTTP.PingInterval < 100*time.Millisecond || c.HTTP.PingInterval > 10*time.Minute {
		// Clients bound an interval they are told to the same range.
		return config{}, fmt.Errorf("invalid --sse-ping %s: must be from 100ms to 10m", c.HTTP.PingInterval)
	}
	if c.DrainDelay < 0 || c.DrainDelay > 5*time.Minute {
		return config{}, fmt.Errorf("invalid --drain-delay %s: must be between 0 and 5m", c.DrainDelay)
	}
	if c.ShutdownTimeout <= 0 {
		return config{}, fmt.Errorf("invalid --shutdown-timeout %s: must be positive", c.ShutdownTimeout)
	}
	if c.Chat.RepublishAfter < time.Second {
		return config{}, fmt.Errorf("invalid --republish-after %s: must be at least 1s", c.Chat.RepublishAfter)
	}
	if c.Callout.MaxConnsPerHandle < 1 {
		return config{}, fmt.Errorf("invalid --nats-max-conns-per-handle %d: must be positive", c.Callout.MaxConnsPerHandle)
	}
	if c.Callout.TTL < time.Minute {
		return config{}, fmt.Errorf("invalid --nats-user-ttl %s: must be at least 1m", c.Callout.TTL)
	}
	if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return config{}, errors.New("invalid --database-url: want a postgres:// URL, or empty for the embedded store")
		}
	} else if c.DataDir == "" {
		return config{}, errors.New("invalid --data-dir: must not be empty with the embedded store")
	}
	if c.NATS.Listen != "off" {
		if _, port, err := net.SplitHostPort(c.NATS.Listen); err != nil || !validPort(port) {
			return config{}, fmt.Errorf("invalid --nats-listen %q: want host:port or off", c.NATS.Listen)
		}
	}
	for _, addr := range []struct{ flag, v string }{{"nats-cluster-listen", c.NATS.ClusterListen}, {"nats-websocket-listen", c.NATS.WebSocketListen}} {
		if addr.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(addr.v); err != nil || !validPort(port) {
			return config{}, fmt.Errorf("invalid --%s %q: want host:port", addr.flag, addr.v)
		}
	}
	for _, r := range splitList(routes) {
		u, err := url.Parse(r)
		if err != nil {
			// The entry may hold a password: do not echo it.
			return config{}, errors.New("invalid --nats-routes entry: want nats://host:port")
		}
		if u.Scheme != "nats" && u.Scheme != "nats-route" || u.Host == "" {
			return config{}, fmt.Errorf("invalid --nats-routes entry %q: want nats://host:port", u.Redacted())
		}
		c.NATS.Routes = append(c.NATS.Routes, r)
	}
	if len(c.NATS.Routes) > 0 && c.NATS.ClusterListen == "" {
		return config{}, errors.New("invalid --nats-routes: needs --nats-cluster-listen")
	}
	if (c.NATS.ClusterUser != "" || c.NATS.ClusterPassword != "") && c.NATS.ClusterListen == "" {
		return config{}, errors.New("invalid --nats-cluster-user/--nats-cluster-password: need --nats-cluster-listen")
	}
	if c.NATS.URL != "" && (c.NATS.ClusterListen != "" || c.NATS.WebSocketListen != "") {
		return config{}, errors.New("invalid --nats-url: external NATS cannot be combined with --nats-cluster-listen or --nats-websocket-listen")
	}
	if (c.NATS.SystemUser == "") != (c.NATS.SystemPassword == "") || (c.NATS.SystemUser != "" && c.NATS.URL == "") {
		return config{}, errors.New("invalid --nats-system-user/--nats-system-password: give both or neither, with --nats-url")
	}
	if (c.NATS.User == "") != (c.NATS.Password == "") && c.NATS.URL != "" {
		return config{}, errors.New("invalid --nats-user/--nats-password: give both or neither")
	}
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		return config{}, errors.New("invalid --nats-cert/--nats-key: give both or neither")
	}
	for _, a := range splitList(aliases) {
		if strings.ContainsAny(a, "/@ ") || strings.Contains(a, "://") {
			return config{}, fmt.Errorf("invalid --webfinger-aliases entry %q: want a domain such as example.org", a)
		}
		c.HTTP.WebFingerAliases = append(c.HTTP.WebFingerAliases, strings.ToLower(a))
	}
	for _, o := range splitList(wsOrigins) {
		if o == "*" {
			c.NATSWebSocketAnyOrigin = true
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return config{}, fmt.Errorf("invalid --nats-websocket-origins entry %q: want http(s)://host[:port] or *", o)
		}
		c.NATS.WebSocketAllowedOrigins = append(c.NATS.WebSocketAllowedOrigins, u.Scheme+"://"+u.Host)
	}
	if c.NATSWebSocketAnyOrigin && len(c.NATS.WebSocketAllowedOrigins) > 0 {
		return config{}, errors.New("invalid --nats-websocket-origins: * cannot be combined with origins")
	}
	c.PublicURLSet = publicURL != ""
	pu, err := derivePublicURL(publicURL, c.Listen)
	if err != nil {
		return config{}, err
	}
	c.PublicURL = pu
	return c, nil
}

// limitFlagList names the flag of each rate limit.
var limitFlagList = []struct {
	name      ratelimit.Name
	flag, env string
	usage     string
}{
	{ratelimit.Registrations, "rate-registrations", "KEZ_RATE_REGISTRATIONS", "registrations per client IP"},
	{ratelimit.FailedAuth, "rate-failed-auth", "KEZ_RATE_FAILED_AUTH", "failed authentications per client IP"},
	{ratelimit.Sends, "rate-sends", "KEZ_RATE_SENDS", "sends per sending handle (its signing key)"},
	{ratelimit.PairMessages, "rate-pair-messages", "KEZ_RATE_PAIR_MESSAGES", "messages per (sender, recipient)"},
	{ratelimit.PairBytes, "rate-pair-bytes", "KEZ_RATE_PAIR_BYTES", "envelope bytes per (sender, recipient)"},
}

// parseFlags parses args with fs, printing usage only when asked (-h), so
// a mistake is reported as one line naming the flag as --name.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) error {
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fs.SetOutput(stderr)
		fmt.Fprintf(stderr, "usage: %s [flags]\n", fs.Name())
		fs.PrintDefaults()
		return err
	}
	if err != nil {
		return errors.New(flagName.ReplaceAllString(err.Error(), "$1--$2"))
	}
	return nil
}

// flagName matches the flag package's "-name" in its error messages.
var flagName = regexp.MustCompile(`(^|\s)-([a-z][a-z0-9-]*)`)

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= -1 && n <= 65535
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// derivePublicURL parses --public-url, or derives it from the listen address.
func derivePublicURL(raw, listen string) (*url.URL, error) {
	if raw == "" {
		host, port, _ := net.SplitHostPort(listen)
		if host == "" || host == "0.0.0.0" || host == "::" {
			host = "localhost"
		}
		raw = "http://" + net.JoinHostPort(host, port)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid --public-url %q: want http(s)://host[:port]", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	return u, nil
}

// Defaults of the inbox quotas and retention (docs/protocol.md says why).
const (
	// DefaultInboxMaxMessages: a heavy user, in busy groups, receives a
	// couple of thousand messages a day; 30 days of that is 60,000.
	DefaultInboxMaxMessages = 100_000
	// DefaultInboxMaxBytes: 60,000 chat messages of 2 KiB are 120 MiB;
	// 512 MiB also holds 8,000 envelopes of the largest size.
	DefaultInboxMaxBytes = 512 << 20
	// DefaultRetention: a device offline for a month still finds its
	// messages; clients keep their own history.
	DefaultRetention = 30 * 24 * time.Hour
	// DefaultDedupWindow: a client retries a send within minutes or, from
	// an offline queue, days; a month is far past either, and the ids it
	// keeps cost about 200 bytes a deleted message (the row and its two indexes).
	DefaultDedupWindow = 30 * 24 * time.Hour
)

// checkLimits checks the quota, retention and stream memory settings.
func checkLimits(c config) error {
	switch {
	case c.Chat.Quota.Messages < 0:
		return fmt.Errorf("invalid --inbox-max-messages %d: must be 0 (no limit) or more", c.Chat.Quota.Messages)
	case c.Chat.Quota.Bytes > 0 && c.Chat.Quota.Bytes < protocol.MaxEnvelope:
		return fmt.Errorf("invalid --inbox-max-bytes %s: must be 0 (no limit) or at least %s, the largest envelope", formatSize(c.Chat.Quota.Bytes), formatSize(protocol.MaxEnvelope))
	case c.Chat.Retention < 0:
		return fmt.Errorf("invalid --retention %s: must be 0 (keep forever) or positive", c.Chat.Retention)
	case c.Chat.DedupWindow < 0:
		return fmt.Errorf("invalid --dedup-window %s: must be 0 (remember forever) or positive", c.Chat.DedupWindow)
	case c.Chat.StreamPageBytes < protocol.MaxEnvelope:
		return fmt.Errorf("invalid --stream-page-bytes %s: must be at least %s, the largest envelope", formatSize(int64(c.Chat.StreamPageBytes)), formatSize(protocol.MaxEnvelope))
	case c.Chat.CatchUpBudget < int64(c.Chat.StreamPageBytes):
		return fmt.Errorf("invalid --catch-up-budget %s: must be at least --stream-page-bytes (%s)", formatSize(c.Chat.CatchUpBudget), formatSize(int64(c.Chat.StreamPageBytes)))
	case c.Chat.CatchUpWait <= 0:
		return fmt.Errorf("invalid --catch-up-wait %s: must be positive", c.Chat.CatchUpWait)
	case c.Chat.DrainTimeout <= 0:
		return fmt.Errorf("invalid --stream-drain-timeout %s: must be positive", c.Chat.DrainTimeout)
	}
	return nil
}
