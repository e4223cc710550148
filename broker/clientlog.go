package broker

import (
	"log/slog"
	"strings"
	"time"

	"github.com/kez-chat/kezd/faultlog"
)

// clientErrorEvery is the least time between two log lines about client
// connections' errors: a flood of bad connections (anyone can open one and
// send a CONNECT too long, before any login) writes one line per interval,
// with the count, and the rest go at debug level.
const clientErrorEvery = 10 * time.Second

// clientErrorLog summarises, at info level, the errors the embedded server
// logs about client connections from the network: what their remote side
// did wrong (a control line too long, a protocol violation, a publish it may
// not make, a failed TLS handshake) is not the operator's error to fix.
type clientErrorLog struct {
	now func() time.Time
	sum faultlog.Summary
}

func newClientErrorLog() *clientErrorLog { return newClientErrorLogAt(time.Now) }

func newClientErrorLogAt(now func() time.Time) *clientErrorLog {
	return &clientErrorLog{now: now, sum: faultlog.Summary{Every: clientErrorEvery, CountKey: "errors_before_this_unlogged"}}
}

// log logs msg, the server's line about one client's error. A nil log (a
// server logger without one) logs every line at info.
func (r *clientErrorLog) log(log *slog.Logger, msg string) {
	if r == nil {
		log.Info("nats client error", "err", msg)
		return
	}
	r.sum.Log(log, r.now(), "nats client error", "err", msg)
}

// lineConn returns the kind of connection a line of the server's log is
// about, from the prefix nats-server starts those with: "<addr> - <kind>:<n>
// - " ("cid" a client, "wid" a websocket client, "mid" or "mid_ws" MQTT,
// "rid" a route, "gid" a gateway, "lid" a leaf node); "" for a line about
// none. What follows the prefix can hold what the remote side chose (a
// login's user name), so only the prefix says what a line is about.
func lineConn(msg string) (kind, addr string) {
	addr, rest, ok := strings.Cut(msg, " - ")
	if !ok || strings.ContainsAny(addr, " \"") {
		return "", ""
	}
	kind, id, ok := strings.Cut(rest, ":")
	if !ok || kind == "" || strings.ContainsAny(kind, " \"") {
		return "", ""
	}
	if id, _, _ = strings.Cut(id, " "); id == "" || strings.Trim(id, "0123456789") != "" {
		return "", ""
	}
	return kind, addr
}

// remoteClientLine reports whether msg, a line of the server's log, is
// about one client connection from the network. kezd's own connections to
// its embedded server are in-process, with the address "pipe": their errors
// are kezd's, and are not matched.
func remoteClientLine(msg string) bool {
	switch kind, addr := lineConn(msg); kind {
	case "cid", "wid", "mid", "mid_ws":
		return addr != "pipe"
	}
	return false
}
