package main

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/httpapi"
	"github.com/kez-chat/kezd/ratelimit"
	"github.com/kez-chat/kezd/store/postgres"
)

// DefaultAdminListen is where the operator endpoints listen unless told:
// loopback, so that nothing the public can reach reports on the server.
const DefaultAdminListen = "127.0.0.1:9090"

// metricSources are what the metrics read; each package counts for itself
// and knows nothing of Prometheus.
type metricSources struct {
	svc     *chat.Service
	api     *httpapi.Server
	callout *authcallout.Service
	limits  *ratelimit.Limiter
	broker  *broker.Broker
	store   any // its batching is counted when it reports it (Postgres)
}

// batchingStore is a store that batches its appends and point reads
// (store/postgres) and counts them.
type batchingStore interface {
	BatchStats() postgres.BatchStats
	ReadStats() postgres.ReadStats
}

// newRegistry builds the Prometheus registry of GET /metrics on the admin
// listener: kezd's counters and gauges, read when scraped, and the Go
// runtime's and the process's.
func newRegistry(m metricSources) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	counter := func(name, help string, v func() float64, labels prometheus.Labels) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, v))
	}
	gauge := func(name, help string, v func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, v))
	}
	gauge("kezd_streams_open", "Open SSE streams on this instance.", func() float64 { return float64(m.api.OpenStreams()) })
	gauge("kezd_long_polls_open", "Waiting long-polls on this instance.", func() float64 { return float64(m.api.OpenPolls()) })
	counter("kezd_publish_failures_total", "Messages stored but not published on NATS (streams recover them from the store; the outbox sweep publishes them again).",
		func() float64 { return float64(m.svc.PublishFailures()) }, nil)
	counter("kezd_republished_total", "Messages this instance's outbox sweep published again because no instance confirmed their publish in time.",
		func() float64 { return float64(m.svc.Republished()) }, nil)
	counter("kezd_inbox_full_total", "Sends refused because the recipient's inbox held its quota.",
		func() float64 { return float64(m.svc.InboxFullRefusals()) }, nil)
	counter("kezd_streams_busy_total", "Streams ended because the catch-up memory budget stayed taken (clients resume).",
		func() float64 { return float64(m.svc.StreamsBusy()) }, nil)
	counter("kezd_streams_slow_total", "Streams ended because their readers did not take a catch-up page within --stream-drain-timeout (clients resume).",
		func() float64 { return float64(m.api.SlowStreams()) }, nil)
	counter("kezd_live_rejected_total", "Live inbox messages dropped because kezd did not publish them (no valid MAC).",
		func() float64 { return float64(m.broker.LiveRejected()) }, nil)
	counter("kezd_nats_logins_authorized_total", "NATS logins the auth callout granted.",
		func() float64 { return float64(m.callout.Stats().Authorized) }, nil)
	counter("kezd_nats_logins_rejected_total", "NATS logins the auth callout refused.",
		func() float64 { return float64(m.callout.Stats().Rejected) }, nil)
	counter("kezd_nats_login_requests_dropped_total", "Auth callout requests that could not be read or answered.",
		func() float64 { return float64(m.callout.Stats().Dropped) }, nil)
	counter("kezd_nats_login_requests_forwarded_total", "Auth callout requests passed on to the instance running the client's NATS server.",
		func() float64 { return float64(m.callout.Stats().Forwarded) }, nil)
	const refusedHelp = "Requests refused with 429 rate_limited (NATS logins: an authorization violation), by the limit or cap that refused them."
	for _, n := range ratelimit.Names {
		counter("kezd_rate_limited_total", refusedHelp, func() float64 { return float64(m.limits.Refusals(n)) }, prometheus.Labels{"limit": string(n)})
	}
	for _, n := range httpapi.CapNames {
		counter("kezd_rate_limited_total", refusedHelp, func() float64 { return float64(m.api.CapRefusals(n)) }, prometheus.Labels{"limit": n})
	}
	// On NATS a refusal is an authorization violation, there being no 429.
	counter("kezd_rate_limited_total", refusedHelp, func() float64 { return float64(m.callout.Stats().CapRefused) },
		prometheus.Labels{"limit": "nats_connections_per_handle"})
	if st, ok := m.store.(batchingStore); ok {
		counter("kezd_store_commit_batches_total", "Group-commit transactions run for appends; appends over batches is the mean batch.",
			func() float64 { return float64(st.BatchStats().Batches) }, nil)
		counter("kezd_store_commit_appends_total", "Appends the group-commit transactions carried.",
			func() float64 { return float64(st.BatchStats().Appends) }, nil)
		counter("kezd_store_point_reads_total", "Signer lookups (missing the handle cache) and latest-seq reads, batched when concurrent.",
			func() float64 { return float64(st.ReadStats().Reads) }, nil)
		counter("kezd_store_point_read_queries_total", "Queries that answered those reads.",
			func() float64 { return float64(st.ReadStats().Queries) }, nil)
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// adminServer serves the operator endpoints: GET /metrics.
func adminServer(reg *prometheus.Registry) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
	}
}
