package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// user is a registered handle the load generator signs for.
type user struct {
	handle string
	id     *envelope.Identity
}

// newUsers generates n identities named prefix0, prefix1, ….
func newUsers(prefix string, n int) ([]*user, error) {
	us := make([]*user, n)
	for i := range us {
		h := prefix + strconv.Itoa(i)
		id, err := envelope.Generate(h)
		if err != nil {
			return nil, err
		}
		us[i] = &user{handle: h, id: id}
	}
	return us, nil
}

// seed registers users straight in kezd's tables, in one statement:
// registering thousands through the API would time the fsyncs of the setup.
func seed(ctx context.Context, dbURL string, us []*user) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	hs, sks, eks := make([]string, len(us)), make([]string, len(us)), make([]string, len(us))
	for i, u := range us {
		hs[i], sks[i], eks[i] = u.handle, u.id.SigningKeyHex(), u.id.EncryptionKeyHex()
	}
	_, err = conn.Exec(ctx, `
		WITH h AS (
			INSERT INTO handles (handle, signing_key, encryption_key)
			SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
			RETURNING handle
		)
		INSERT INTO inbox_counters (handle) SELECT handle FROM h`, hs, sks, eks)
	if err != nil {
		return fmt.Errorf("seed handles: %w", err)
	}
	return nil
}

// benchEnvelope is an envelope of exactly size bytes of JSON text.
func benchEnvelope(size int) string {
	head, tail := `{"v":1,"ct":"`, `"}`
	return head + strings.Repeat("x", max(0, size-len(head)-len(tail))) + tail
}

// sendRequest is a signed POST /v1/messages as it goes on the wire. The
// signature is made here, by the sender, as a real client does.
func sendRequest(u *user, to, id, env string) []byte {
	body := `{"to":"` + to + `","id":"` + id + `","envelope":` + env + `}`
	ts := time.Now().Unix()
	sig := identity.Sign(u.id.Signing, identity.SendString(identity.BodySHA256([]byte(body)), ts))
	return fmt.Appendf(nil, "POST /v1/messages HTTP/1.1\r\nHost: kez\r\nAuthorization: Kez %s:%d:%s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		u.handle, ts, sig, len(body), body)
}

// streamTarget is the path and query of u's signed stream request.
func streamTarget(u *user) string {
	ts := time.Now().Unix()
	return protocol.StreamPath(u.handle) + "?auth=" + strconv.FormatInt(ts, 10) + ":" + identity.Sign(u.id.Signing, identity.StreamString(u.handle, ts))
}

func streamRequest(target string) []byte {
	return []byte("GET " + target + " HTTP/1.1\r\nHost: kez\r\nAccept: text/event-stream\r\n\r\n")
}

// stream is one open SSE stream of the load generator.
type stream struct {
	conn net.Conn
	done chan struct{}
	err  error // set before done is closed
}

// openStream opens u's stream on addr, waits for its ready event, then
// calls onMessage with the client id of every message event, from its own
// goroutine.
func openStream(ctx context.Context, addr string, u *user, onMessage func(id string)) (*stream, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*stream, error) {
		conn.Close()
		return nil, fmt.Errorf("stream %s: %w", u.handle, err)
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(streamRequest(streamTarget(u))); err != nil {
		return fail(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return fail(err)
	}
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fail(fmt.Errorf("status %d: %s", res.StatusCode, msg))
	}
	events := bufio.NewReaderSize(res.Body, 16<<10)
	for {
		ev, _, err := nextEvent(events)
		if err != nil {
			return fail(err)
		}
		if ev == "ready" {
			break
		}
	}
	_ = conn.SetDeadline(time.Time{})
	s := &stream{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			ev, data, err := nextEvent(events)
			if err != nil {
				s.err = err
				return
			}
			if ev != "message" {
				continue
			}
			var m struct {
				ID string `json:"id"`
			}
			if err := json.Unmarshal(data, &m); err != nil {
				s.err = fmt.Errorf("message event: %w", err)
				return
			}
			onMessage(m.ID)
		}
	}()
	return s, nil
}

// close ends the stream and waits for its reader.
func (s *stream) close() {
	s.conn.Close()
	<-s.done
}

// nextEvent reads one SSE event with data: its type and data.
func nextEvent(r *bufio.Reader) (event string, data []byte, err error) {
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return "", nil, err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if data != nil {
				if event == "" {
					event = "message"
				}
				return event, data, nil
			}
			event = ""
		case bytes.HasPrefix(line, []byte("event: ")):
			event = string(line[len("event: "):])
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[len("data: "):]...)
		}
	}
}

// sender is one load-generator connection sending requests and reading
// each answer before the next, as a keep-alive HTTP/1.1 client does.
type sender struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialSender(ctx context.Context, addr string) (*sender, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return &sender{conn: c, r: bufio.NewReader(c)}, nil
}

func (s *sender) send(req []byte) error {
	if _, err := s.conn.Write(req); err != nil {
		return err
	}
	res, err := http.ReadResponse(s.r, nil)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("send: status %d: %s", res.StatusCode, body)
	}
	return nil
}

// load is the run's load generator: its senders, the recipients whose
// streams it opens, and the envelope it sends.
type load struct {
	senders  []*user
	envelope string
	run      string // prefixes client ids, unique per measurement
	runs     atomic.Int64
	// dbCPU reads the Postgres server's CPU time; nil when it cannot be seen.
	dbCPU func() (time.Duration, error)
}

// readDBCPU is the Postgres server's CPU time so far, 0 when unseen.
func (l *load) readDBCPU() (time.Duration, error) {
	if l.dbCPU == nil {
		return 0, nil
	}
	return l.dbCPU()
}

func (l *load) nextRun() string {
	return l.run + "r" + strconv.FormatInt(l.runs.Add(1), 10)
}

// throughputResult is one closed-loop run.
type throughputResult struct {
	rate       float64 // deliveries per second
	cpuPerMsg  float64 // server CPU µs per delivery
	dbPerMsg   float64 // Postgres CPU µs per delivery (0: not measured)
	sent, lost int64
	batch      float64 // mean appends per group-commit batch (0: none)
}

// throughput sends from every sender, closed-loop, for dur, to the
// recipients in turn, each of which has one open stream on the server p; it
// returns the deliveries per second (each message reaching each stream
// counts once), the server's CPU time per delivery, the messages sent and
// how many of them never arrived. kezd must lose none; the baseline has no
// way to recover what NATS drops under load (a slow consumer), so its losses
// are reported, not fatal.
func (l *load) throughput(ctx context.Context, p *serverProc, recipients []*user, dur time.Duration) (throughputResult, error) {
	var delivered atomic.Int64
	var last atomic.Int64 // unix nanos of the latest delivery
	streams := make([]*stream, 0, len(recipients))
	defer func() {
		for _, s := range streams {
			s.close()
		}
	}()
	for _, r := range recipients {
		s, err := openStream(ctx, p.addr, r, func(string) {
			delivered.Add(1)
			last.Store(time.Now().UnixNano())
		})
		if err != nil {
			return throughputResult{}, err
		}
		streams = append(streams, s)
	}

	run := l.nextRun()
	var sentN atomic.Int64
	cpu0, err := p.cpu()
	if err != nil {
		return throughputResult{}, err
	}
	b0, err := p.batches()
	if err != nil {
		return throughputResult{}, err
	}
	db0, err := l.readDBCPU()
	if err != nil {
		return throughputResult{}, err
	}
	start := time.Now()
	deadline := start.Add(dur)
	err = l.each(ctx, p.addr, func(s int, snd *sender) error {
		for k := 0; time.Now().Before(deadline); k++ {
			i := k*len(l.senders) + s
			to := recipients[i%len(recipients)].handle
			if err := snd.send(sendRequest(l.senders[s], to, run+"-"+strconv.Itoa(i), l.envelope)); err != nil {
				return err
			}
			sentN.Add(1)
		}
		return nil
	})
	if err != nil {
		return throughputResult{}, err
	}
	sent := sentN.Load()
	if err := waitFor(ctx, 10*time.Second, func() bool { return delivered.Load() >= sent }); err != nil && ctx.Err() != nil {
		return throughputResult{}, err
	}
	cpu1, err := p.cpu()
	if err != nil {
		return throughputResult{}, err
	}
	b1, err := p.batches()
	if err != nil {
		return throughputResult{}, err
	}
	db1, err := l.readDBCPU()
	if err != nil {
		return throughputResult{}, err
	}
	var batch float64
	if n := b1.Batches - b0.Batches; n > 0 {
		batch = float64(b1.Appends-b0.Appends) / float64(n)
	}
	got := delivered.Load()
	elapsed := time.Duration(last.Load() - start.UnixNano())
	return throughputResult{
		batch:     batch,
		rate:      float64(got) / elapsed.Seconds(),
		cpuPerMsg: µs(cpu1-cpu0) / float64(max(got, 1)),
		dbPerMsg:  µs(db1-db0) / float64(max(got, 1)),
		sent:      sent,
		lost:      max(0, sent-got),
	}, nil
}

// latencyResult is one open-loop run.
type latencyResult struct {
	p50, p99 time.Duration
	// answerP50 and answerP99 are of the send's answer (from the same due
	// time to the 201 read). Both servers publish before they answer, so
	// this is the whole send; the rest of POST→SSE is the delivery from
	// NATS to the stream's reader.
	answerP50, answerP99 time.Duration
	cpuPerMsg            float64 // server CPU µs per message
}

// latency sends at a fixed offered rate (open loop: message i is due at
// start + i/rate whether or not earlier ones are answered) to recipients in
// turn, each with one open stream on p, and returns the percentiles of each
// message's time from its due time to its arrival on the stream, and the
// server's CPU per message. Measuring from the due time, not the moment a
// sender got to it, keeps queueing in the numbers.
func (l *load) latency(ctx context.Context, p *serverProc, recipients []*user, rate float64, dur time.Duration) (latencyResult, error) {
	n := int(rate * dur.Seconds())
	interval := time.Duration(float64(time.Second) / rate)
	run := l.nextRun()
	lat := make([]time.Duration, n)
	answered := make([]time.Duration, n)
	var got atomic.Int64
	var start time.Time // set once the streams are open, before the first send
	var started sync.WaitGroup
	started.Add(1)
	for _, r := range recipients {
		s, err := openStream(ctx, p.addr, r, func(id string) {
			i, err := strconv.Atoi(strings.TrimPrefix(id, run+"-"))
			if err != nil || i < 0 || i >= n {
				return
			}
			started.Wait()
			lat[i] = time.Since(start.Add(time.Duration(i) * interval))
			got.Add(1)
		})
		if err != nil {
			return latencyResult{}, err
		}
		defer s.close()
	}

	cpu0, err := p.cpu()
	if err != nil {
		return latencyResult{}, err
	}
	jobs := make(chan int, n)
	start = time.Now()
	started.Done()
	pace := make(chan struct{})
	go func() {
		defer close(jobs)
		defer close(pace)
		for i := range n {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
			jobs <- i
		}
	}()
	err = l.each(ctx, p.addr, func(s int, snd *sender) error {
		for i := range jobs {
			if err := snd.send(sendRequest(l.senders[s], recipients[i%len(recipients)].handle, run+"-"+strconv.Itoa(i), l.envelope)); err != nil {
				return err
			}
			answered[i] = time.Since(start.Add(time.Duration(i) * interval))
		}
		return nil
	})
	<-pace
	if err != nil {
		return latencyResult{}, err
	}
	if err := waitFor(ctx, 10*time.Second, func() bool { return got.Load() >= int64(n) }); err != nil {
		return latencyResult{}, fmt.Errorf("%d of %d messages delivered: %w", got.Load(), n, err)
	}
	cpu1, err := p.cpu()
	if err != nil {
		return latencyResult{}, err
	}
	sorted, answers := sortedCopy(lat), sortedCopy(answered)
	return latencyResult{p50: percentile(sorted, 50), p99: percentile(sorted, 99),
		answerP50: percentile(answers, 50), answerP99: percentile(answers, 99), cpuPerMsg: µs(cpu1-cpu0) / float64(n)}, nil
}

// profile runs one more many-streams throughput run on p with its CPU
// profile on, and writes its allocations over that run: <dir>/<server>.cpu.pprof,
// and <server>.allocs.pprof to read with -base <server>.allocs-before.pprof.
func (l *load) profile(ctx context.Context, p *serverProc, recipients []*user, cfg config) error {
	path := func(kind string) string { return filepath.Join(cfg.profileDir, p.name+"."+kind+".pprof") }
	for _, cmd := range []string{"profile allocs " + path("allocs-before"), "cpu-start " + path("cpu")} {
		if _, err := p.do(cmd); err != nil {
			return err
		}
	}
	if _, err := l.throughput(ctx, p, recipients, cfg.duration); err != nil {
		return err
	}
	for _, cmd := range []string{"cpu-stop", "profile allocs " + path("allocs")} {
		if _, err := p.do(cmd); err != nil {
			return err
		}
	}
	return nil
}

// each runs fn on one goroutine per sender, each with its own connection,
// and returns the first error.
func (l *load) each(ctx context.Context, addr string, fn func(s int, snd *sender) error) error {
	errs := make([]error, len(l.senders))
	var wg sync.WaitGroup
	for s := range l.senders {
		snd, err := dialSender(ctx, addr)
		if err != nil {
			return err
		}
		defer snd.conn.Close()
		wg.Go(func() { errs[s] = fn(s, snd) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitFor polls cond until it holds, for at most limit.
func waitFor(ctx context.Context, limit time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// percentile returns the p-th percentile (0–100) of sorted durations.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func sortedCopy(d []time.Duration) []time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s
}
