package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/httpapi"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
	"github.com/kez-chat/kezd/store/postgres"
)

// target is a server under load: kezd or the baseline pipeline. Both serve
// POST /v1/messages and GET /v1/inbox/:handle/stream on addr, so one load
// generator drives both.
type target struct {
	addr  string
	close func() error
	// batches counts kezd's group-commit batches and the appends in
	// them; nil for the baseline, which commits a row at a time.
	batches func() postgres.BatchStats
	// reads counts kezd's batched point reads and their queries; nil for
	// the baseline.
	reads func() postgres.ReadStats
}

// startKezd assembles kezd's real stack as `kezd serve` does (Postgres
// store, embedded NATS broker, chat core, Echo HTTP API on a loopback
// listener), minus the NATS-only parts (auth callout, send responder) that
// the HTTP path never touches. Its embedded NATS has no listener: kezd's
// connection is in-process, as with --nats-listen off.
func startKezd(ctx context.Context, dbURL string, commitWorkers int, log *slog.Logger) (*target, error) {
	db, err := postgres.Open(ctx, postgres.Config{URL: dbURL, CommitWorkers: commitWorkers}, log.With("component", "store"))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	b, err := broker.Start(ctx, broker.Config{}, log.With("component", "nats"))
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("start broker: %w", err)
	}
	svc := chat.New(chat.Config{}, db, b, b, log.With("component", "chat"))
	outboxCtx, stopOutbox := context.WithCancel(context.WithoutCancel(ctx))
	outboxDone := make(chan struct{})
	go func() { defer close(outboxDone); svc.RunOutbox(outboxCtx) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		stopOutbox()
		<-outboxDone
		return nil, errors.Join(err, b.Close(ctx), db.Close())
	}
	// Every bench client comes from 127.0.0.1: the per-address stream cap
	// would refuse the idle streams.
	api := httpapi.New(httpapi.Config{PublicURL: &url.URL{Scheme: "http", Host: ln.Addr().String()},
		MaxStreams: 1 << 20, MaxStreamsPerIP: 1 << 20}, svc, log.With("component", "http"))
	srv := api.HTTPServer(ln.Addr().String())
	srv.ErrorLog = slog.NewLogLogger(log.Handler(), slog.LevelDebug)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return &target{addr: ln.Addr().String(), batches: db.BatchStats, reads: db.ReadStats, close: func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		err = errors.Join(err, api.WaitStreams(ctx))
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		stopOutbox()
		<-outboxDone
		return errors.Join(err, b.Close(ctx), db.Close())
	}}, nil
}

// The baseline is the thinnest pipeline that does the same job: a bare
// net/http server whose send handler decodes the body, stores the message
// with raw pgx in one autocommit statement (one round trip) and publishes the
// message JSON with raw nats.go to an embedded nats-server; each stream is one
// NATS subscription whose messages the handler writes and flushes. No
// signature checks, no dedup, no gap fill, no quota, no outbox.
//
// Its seqs are per recipient, as PROTOCOL.md's are: the statement bumps the
// recipient's counter row and inserts the message under it, so two sends to
// one inbox take turns on that row until each commits (one fsync each), as
// any store of gap-free per-inbox seqs must unless it batches. With
// globalSeqs (kezbench -baseline-seqs global, the baseline of the runs
// before 2026-12-02) it takes one bigserial for every inbox instead: seqs a
// client could not tell gaps by, with no row shared between sends.
const baselineSchema = `CREATE TABLE IF NOT EXISTS bench_baseline (
	recipient text        NOT NULL,
	seq       bigint      NOT NULL,
	sender    text        NOT NULL,
	client_id text        NOT NULL,
	envelope  text        NOT NULL,
	sent_at   timestamptz NOT NULL DEFAULT now(),
	PRIMARY KEY (recipient, seq)
);
CREATE TABLE IF NOT EXISTS bench_baseline_counters (
	recipient text   PRIMARY KEY,
	last_seq  bigint NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS bench_baseline_global_seq`

const (
	baselinePerRecipientSQL = `
WITH c AS (
	INSERT INTO bench_baseline_counters AS c (recipient, last_seq) VALUES ($1, 1)
	ON CONFLICT (recipient) DO UPDATE SET last_seq = c.last_seq + 1
	RETURNING last_seq
)
INSERT INTO bench_baseline (recipient, seq, sender, client_id, envelope)
SELECT $1, last_seq, $2, $3, $4 FROM c RETURNING seq, sent_at`
	baselineGlobalSQL = `
INSERT INTO bench_baseline (recipient, seq, sender, client_id, envelope)
VALUES ($1, nextval('bench_baseline_global_seq'), $2, $3, $4) RETURNING seq, sent_at`
)

type baseline struct {
	pool *pgxpool.Pool
	nc   *nats.Conn
	// insert is baselinePerRecipientSQL or baselineGlobalSQL.
	insert string
}

func startBaseline(ctx context.Context, dbURL string, conns int32, globalSeqs bool) (*target, error) {
	pcfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		return nil, err
	}
	pcfg.MaxConns = conns
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, err
	}
	if _, err := pool.Exec(ctx, baselineSchema); err != nil {
		pool.Close()
		return nil, fmt.Errorf("baseline schema: %w", err)
	}
	ns, err := server.NewServer(&server.Options{DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		pool.Close()
		return nil, err
	}
	ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		pool.Close()
		ns.Shutdown()
		return nil, errors.New("baseline nats-server not ready")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		pool.Close()
		ns.Shutdown()
		return nil, err
	}
	bl := &baseline{pool: pool, nc: nc, insert: baselinePerRecipientSQL}
	if globalSeqs {
		bl.insert = baselineGlobalSQL
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/messages", bl.send)
	mux.HandleFunc("GET /v1/inbox/{handle}/stream", bl.stream)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		nc.Close()
		ns.Shutdown()
		pool.Close()
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	streamCtx, endStreams := context.WithCancel(context.Background())
	srv.BaseContext = func(net.Listener) context.Context { return streamCtx }
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	return &target{addr: ln.Addr().String(), close: func() error {
		endStreams()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
		nc.Close()
		ns.Shutdown()
		ns.WaitForShutdown()
		pool.Close()
		return err
	}}, nil
}

func (bl *baseline) send(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, protocol.MaxSendBody))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var m store.Message
	if err := json.Unmarshal(body, &m); err != nil || m.To == "" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	// "Kez <handle>:<ts>:<sig>", taken on trust.
	m.From, _, _ = strings.Cut(strings.TrimPrefix(r.Header.Get("Authorization"), "Kez "), ":")
	if err := bl.pool.QueryRow(r.Context(), bl.insert, m.To, m.From, m.ID, string(m.Envelope)).Scan(&m.Seq, &m.SentAt); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	data, err := json.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	seq := strconv.FormatInt(m.Seq, 10)
	if err := bl.nc.PublishMsg(&nats.Msg{Subject: "bench.inbox." + m.To, Data: data, Header: nats.Header{protocol.SeqHeader: {seq}}}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"seq":%s,"to":%q,"id":%q}`, seq, m.To, m.ID)
}

func (bl *baseline) stream(w http.ResponseWriter, r *http.Request) {
	ch := make(chan *nats.Msg, 64)
	sub, err := bl.nc.ChanSubscribe("bench.inbox."+r.PathValue("handle"), ch)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer sub.Unsubscribe()
	if err := bl.nc.Flush(); err != nil { // the server has the subscription
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	rc := http.NewResponseController(w)
	io.WriteString(w, "event: ready\ndata: {}\n\n")
	if rc.Flush() != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case m := <-ch:
			io.WriteString(w, "id: "+m.Header.Get(protocol.SeqHeader)+"\nevent: message\ndata: ")
			w.Write(m.Data)
			io.WriteString(w, "\n\n")
			if rc.Flush() != nil {
				return
			}
		}
	}
}
