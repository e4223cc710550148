package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// report collects the rows of the table, each a median of the runs.
type report struct{ rows []row }

// median is the median of xs (the mean of the middle two for an even count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianOf is the median of f over runs.
func medianOf[T any](runs []T, f func(T) float64) float64 {
	xs := make([]float64, len(runs))
	for i, r := range runs {
		xs[i] = f(r)
	}
	return median(xs)
}

// spread lists f over runs, for the note: the noise is part of the result.
func spread[T any](runs []T, format string, f func(T) float64) string {
	parts := make([]string, len(runs))
	for i, r := range runs {
		parts[i] = fmt.Sprintf(format, f(r))
	}
	return strings.Join(parts, ", ")
}

func µs(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

func (rep *report) throughput(name string, runs [2][]throughputResult) {
	rate := func(r throughputResult) float64 { return r.rate }
	cpu := func(r throughputResult) float64 { return r.cpuPerMsg }
	batch := func(r throughputResult) float64 { return r.batch }
	k, b := runs[0], runs[1]
	rep.rows = append(rep.rows,
		row{name: "deliveries/s, " + name, kezd: medianOf(k, rate), base: medianOf(b, rate), unit: "/s",
			goal: "≥ 1.00", limit: 1,
			note: fmt.Sprintf("kezd %s; baseline %s; sent %d / %d, baseline lost %d", spread(k, "%.0f", rate), spread(b, "%.0f", rate),
				k[len(k)-1].sent, b[len(b)-1].sent, b[len(b)-1].lost)},
		row{name: "server CPU per delivery, " + name, kezd: medianOf(k, cpu), base: medianOf(b, cpu), unit: "µs",
			goal: "≤ 1.00", limit: 1, atMost: true,
			note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.0f", cpu), spread(b, "%.0f", cpu))},
		row{name: "kezd's group-commit batch, mean appends, " + name, kezd: medianOf(k, batch), unit: "", noBase: true,
			note: fmt.Sprintf("%s; the baseline commits one row per transaction", spread(k, "%.1f", batch))},
	)
	if db := func(r throughputResult) float64 { return r.dbPerMsg }; medianOf(k, db) > 0 {
		both := func(r throughputResult) float64 { return r.cpuPerMsg + r.dbPerMsg }
		rep.rows = append(rep.rows,
			row{name: "Postgres CPU per delivery, " + name, kezd: medianOf(k, db), base: medianOf(b, db), unit: "µs",
				note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.0f", db), spread(b, "%.0f", db))},
			row{name: "server + Postgres CPU per delivery, " + name, kezd: medianOf(k, both), base: medianOf(b, both), unit: "µs",
				note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.0f", both), spread(b, "%.0f", both))})
	}
}

func (rep *report) latency(name string, runs [2][]latencyResult) {
	k, b := runs[0], runs[1]
	p50 := func(r latencyResult) float64 { return ms(r.p50) }
	p99 := func(r latencyResult) float64 { return ms(r.p99) }
	cpu := func(r latencyResult) float64 { return r.cpuPerMsg }
	a50 := func(r latencyResult) float64 { return ms(r.answerP50) }
	a99 := func(r latencyResult) float64 { return ms(r.answerP99) }
	rep.rows = append(rep.rows,
		row{name: "POST→SSE p50 " + name, kezd: medianOf(k, p50), base: medianOf(b, p50), unit: "ms",
			note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.2f", p50), spread(b, "%.2f", p50))},
		row{name: "POST→SSE p99 " + name, kezd: medianOf(k, p99), base: medianOf(b, p99), unit: "ms",
			goal: "≤ 1.20", limit: 1.2, atMost: true,
			note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.2f", p99), spread(b, "%.2f", p99))},
		row{name: "POST→201 p50 " + name + " (the send's answer: stored)", kezd: medianOf(k, a50), base: medianOf(b, a50), unit: "ms",
			note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.2f", a50), spread(b, "%.2f", a50))},
		row{name: "POST→201 p99 " + name + " (the send's answer: stored)", kezd: medianOf(k, a99), base: medianOf(b, a99), unit: "ms",
			note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.2f", a99), spread(b, "%.2f", a99))},
		row{name: "server CPU per message " + name, kezd: medianOf(k, cpu), base: medianOf(b, cpu), unit: "µs",
			note: fmt.Sprintf("kezd %s; baseline %s", spread(k, "%.0f", cpu), spread(b, "%.0f", cpu))},
	)
}

func (rep *report) idle(cfg config, res [2]idleResult) {
	k, b := res[0], res[1]
	n := k.streams
	rep.rows = append(rep.rows,
		row{name: fmt.Sprintf("stream opens/s, %d opened %d at a time (a reconnect storm)", n, cfg.storm), kezd: k.openRate, base: b.openRate, unit: "/s",
			note: fmt.Sprintf("all ready after %.2f s / %.2f s; server CPU per open %.0f / %.0f µs; kezd's store reads %d in %d queries", k.openTime.Seconds(), b.openTime.Seconds(), k.cpuPerOpen, b.cpuPerOpen, k.openReads, k.openQueries)},
		row{name: fmt.Sprintf("server CPU with %d idle streams, nothing sent", n), kezd: k.idleCPU * 100, base: b.idleCPU * 100, unit: "% core",
			note: fmt.Sprintf("over %s", cfg.idleWindow)},
		row{name: fmt.Sprintf("POST→SSE p50 at %g msg/s, %d idle streams open", cfg.rate, n), kezd: ms(k.lat.p50), base: ms(b.lat.p50), unit: "ms"},
		row{name: fmt.Sprintf("POST→SSE p99 at %g msg/s, %d idle streams open", cfg.rate, n), kezd: ms(k.lat.p99), base: ms(b.lat.p99), unit: "ms",
			goal: "≤ 1.20", limit: 1.2, atMost: true},
		row{name: fmt.Sprintf("server CPU per message at %g msg/s, %d idle streams open", cfg.rate, n), kezd: k.lat.cpuPerMsg, base: b.lat.cpuPerMsg, unit: "µs"},
		row{name: fmt.Sprintf("server heap+stacks per idle stream (%d)", n), kezd: k.heapPerStream / 1024, base: b.heapPerStream / 1024, unit: "KiB",
			note: fmt.Sprintf("stacks %.1f / %.1f KiB, %.1f / %.1f goroutines per stream", k.stackPerStream/1024, b.stackPerStream/1024, k.goroutinesEach, b.goroutinesEach)},
		row{name: fmt.Sprintf("server RSS per idle stream (%d)", n), kezd: k.rssPerStream / 1024, base: b.rssPerStream / 1024, unit: "KiB",
			note: "includes GC headroom"},
	)
}
