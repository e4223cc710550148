// Command kezbench measures kezd's live delivery against the thinnest
// pipeline that does the same job, in one run on this machine: delivered
// messages per second with 1 and with many open SSE streams, POST→SSE
// latency at a fixed offered rate, and the server's memory per idle
// stream. It runs kezd's real stack in-process (Postgres store with fsync
// on, embedded NATS, chat core, HTTP API on loopback) and the baseline (raw
// pgx insert, raw NATS publish, bare net/http SSE writer) beside it, drives
// both with one load generator over loopback HTTP, and prints each number
// with the baseline's and their ratio.
//
//	go run ./cmd/kezbench                 # every scenario
//	go run ./cmd/kezbench throughput latency -duration 5s
//
// Postgres: the server named by KEZ_BENCH_DATABASE_URL (the run creates and
// drops a database of its own there), else a throwaway cluster started with
// the machine's initdb and pg_ctl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

const envDatabaseURL = "KEZ_BENCH_DATABASE_URL"

func main() {
	if ran, err := child(os.Args[1:]); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, "kezbench", os.Args[1]+":", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintln(os.Stderr, "kezbench:", err)
		os.Exit(1)
	}
}

var scenarios = []string{"throughput", "latency", "idle"}

type config struct {
	duration   time.Duration
	count      int
	senders    int
	streams    int
	rate       float64
	idle       int
	storm      int
	envelope   int
	settle     time.Duration
	idleWindow time.Duration
	profileDir string
	// baselineSeqs is "per-recipient" (as PROTOCOL.md's) or "global".
	baselineSeqs string
	// commitWorkers is kezd's postgres.Config.CommitWorkers (0: its default).
	commitWorkers int
	scenarios     []string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("kezbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: kezbench [flags] [%s ...]\n\nPostgres: %s, else a throwaway cluster.\n\n", joinScenarios(), envDatabaseURL)
		fs.PrintDefaults()
	}
	fs.DurationVar(&c.duration, "duration", 3*time.Second, "length of each throughput and latency measurement")
	fs.IntVar(&c.count, "count", 3, "runs of each throughput and latency measurement, kezd and baseline in turn; the report shows medians")
	fs.IntVar(&c.senders, "senders", 32, "concurrent senders, each on its own keep-alive connection")
	fs.IntVar(&c.streams, "streams", 100, "open streams (on as many recipients) in the many-streams throughput run")
	fs.Float64Var(&c.rate, "rate", 500, "offered rate of the latency runs, messages/s")
	fs.IntVar(&c.idle, "idle", 10000, "idle streams of the idle run (memory, open rate, CPU with them open)")
	fs.IntVar(&c.storm, "storm", 1000, "streams the idle run opens at once (a reconnect storm)")
	fs.IntVar(&c.envelope, "envelope", 1024, "envelope size, bytes of JSON")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait after the idle streams open before reading memory (streams re-read the store 1s after setup)")
	fs.DurationVar(&c.idleWindow, "idle-window", 16*time.Second, "how long the idle run reads the server's CPU with the idle streams open and nothing sent; at least the 15 s ping interval, so that every stream's ping falls in it")
	fs.IntVar(&c.commitWorkers, "commit-workers", 0, "kezd's group-commit workers (postgres.Config.CommitWorkers); 0 is the store's default")
	fs.StringVar(&c.baselineSeqs, "baseline-seqs", "per-recipient", "the baseline's seqs: per-recipient (gap-free per inbox, as PROTOCOL.md's: sends to one inbox take turns on its counter row) or global (one sequence for every inbox, the baseline of runs before 2026-12-02)")
	fs.StringVar(&c.profileDir, "profile", "", "profile each server into this directory: CPU and allocations through one more many-streams throughput run after the measured ones, CPU while the idle streams open and while they idle, the heap with them open")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.baselineSeqs != "per-recipient" && c.baselineSeqs != "global" {
		return c, fmt.Errorf("-baseline-seqs is per-recipient or global, not %q", c.baselineSeqs)
	}
	c.scenarios = fs.Args()
	if len(c.scenarios) == 0 {
		c.scenarios = scenarios
	}
	for i, s := range c.scenarios {
		if s == "memory" { // its old name
			c.scenarios[i], s = "idle", "idle"
		}
		if !slices.Contains(scenarios, s) {
			return c, fmt.Errorf("unknown scenario %q (want %s)", s, joinScenarios())
		}
	}
	if c.duration <= 0 || c.count < 1 || c.senders < 1 || c.streams < 1 || c.rate <= 0 || c.idle < 1 || c.storm < 1 || c.envelope < 16 || c.commitWorkers < 0 {
		return c, errors.New("-duration, -count, -senders, -streams, -rate, -idle, -storm must be positive, -envelope at least 16 and -commit-workers not negative")
	}
	return c, nil
}

func joinScenarios() string { return strings.Join(scenarios, "|") }

// run is kezbench without the process, so a test can run it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	limit, err := raiseFileLimit()
	if err != nil {
		return fmt.Errorf("raise the file limit: %w", err)
	}
	if need := uint64(cfg.idle) + 1000; slices.Contains(cfg.scenarios, "idle") && limit < need {
		return fmt.Errorf("%d idle streams need a file limit of about %d; the hard limit is %d (lower -idle)", cfg.idle, need, limit)
	}
	if cfg.profileDir != "" {
		if err := os.MkdirAll(cfg.profileDir, 0o755); err != nil {
			return err
		}
	}

	fmt.Fprintln(stderr, "kezbench: starting Postgres, kezd and the baseline")
	db, err := openDatabase(ctx, getenv(envDatabaseURL))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.drop()) }()
	kezd, err := startServer(ctx, exe, "kezd", db.URL, cfg.senders, cfg.commitWorkers)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, kezd.close()) }()
	baseKind := "baseline"
	if cfg.baselineSeqs == "global" {
		baseKind = "baseline-global"
	}
	base, err := startServer(ctx, exe, baseKind, db.URL, cfg.senders, 0)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, base.close()) }()
	servers := []*serverProc{kezd, base}

	senders, err := newUsers("s", cfg.senders)
	if err != nil {
		return err
	}
	recipients, err := newUsers("r", cfg.streams)
	if err != nil {
		return err
	}
	var idle []*user
	if slices.Contains(cfg.scenarios, "idle") {
		if idle, err = newUsers("i", cfg.idle); err != nil {
			return err
		}
	}
	if err := seed(ctx, db.URL, slices.Concat(senders, recipients, idle)); err != nil {
		return err
	}
	l := &load{senders: senders, envelope: benchEnvelope(cfg.envelope), run: strconv.FormatInt(time.Now().UnixNano(), 36),
		dbCPU: postgresCPU(ctx, db.URL)}

	var rep report
	for _, sc := range cfg.scenarios {
		switch sc {
		case "throughput":
			sets := [][]*user{recipients[:1], recipients}
			if len(recipients) == 1 {
				sets = sets[:1]
			}
			for _, rs := range sets {
				name := fmt.Sprintf("%d stream(s) on %d recipient(s), closed loop", len(rs), len(rs))
				fmt.Fprintf(stderr, "kezbench: throughput, %s, %d × %s each\n", name, cfg.count, cfg.duration)
				var runs [2][]throughputResult
				for range cfg.count {
					for i, p := range servers {
						r, err := l.throughput(ctx, p, rs, cfg.duration)
						if err != nil {
							return fmt.Errorf("%s throughput, %s: %w", p.name, name, err)
						}
						if i == 0 && r.lost > 0 {
							return fmt.Errorf("kezd throughput, %s: %d of %d messages never reached their stream", name, r.lost, r.sent)
						}
						runs[i] = append(runs[i], r)
					}
				}
				rep.throughput(name, runs)
			}
		case "latency":
			sets := [][]*user{recipients[:1], recipients}
			if len(recipients) == 1 {
				sets = sets[:1]
			}
			for _, rs := range sets {
				name := fmt.Sprintf("at %g msg/s, %d stream(s) on %d recipient(s)", cfg.rate, len(rs), len(rs))
				fmt.Fprintf(stderr, "kezbench: POST→SSE latency %s, %d × %s each\n", name, cfg.count, cfg.duration)
				var runs [2][]latencyResult
				for range cfg.count {
					for i, p := range servers {
						r, err := l.latency(ctx, p, rs, cfg.rate, cfg.duration)
						if err != nil {
							return fmt.Errorf("%s latency, %s: %w", p.name, name, err)
						}
						runs[i] = append(runs[i], r)
					}
				}
				rep.latency(name, runs)
			}
		case "idle":
			// One run each: a detached kezd stream whose client is gone is
			// noticed at its next pings (about 30 s), so runs in a row
			// would count the last run's streams too.
			fmt.Fprintf(stderr, "kezbench: %d idle streams, opened %d at a time\n", len(idle), cfg.storm)
			var res [2]idleResult
			for i, p := range servers {
				r, err := l.idle(ctx, exe, p, idle, recipients[0], cfg)
				if err != nil {
					return fmt.Errorf("%s idle streams: %w", p.name, err)
				}
				res[i] = r
			}
			rep.idle(cfg, res)
		}
	}
	printTable(stdout, cfg, rep.rows)

	if cfg.profileDir != "" {
		fmt.Fprintf(stderr, "kezbench: profiling both servers into %s\n", cfg.profileDir)
		for _, p := range servers {
			if err := l.profile(ctx, p, recipients, cfg); err != nil {
				return fmt.Errorf("profile %s: %w", p.name, err)
			}
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// row is one line of the report.
type row struct {
	name       string
	kezd, base float64
	unit       string
	noBase     bool
	goal       string  // "≤ 1.00": the ratio kezd/baseline the issue asks for
	limit      float64 // that ratio
	atMost     bool    // the goal is a ceiling (else a floor)
	note       string
}

func printTable(w io.Writer, cfg config, rows []row) {
	fmt.Fprintf(w, "\nkezbench: %d senders, %d-byte envelopes, Postgres fsync on, loopback, servers in child processes, the baseline's seqs %s; medians of %d runs of %s\n\n", cfg.senders, cfg.envelope, cfg.baselineSeqs, cfg.count, cfg.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tkezd\tbaseline\tratio\tgoal\tmet\t\tnote\t")
	for _, r := range rows {
		base, ratio, met := "-", "-", ""
		if !r.noBase {
			base = fmt.Sprintf("%.1f %s", r.base, r.unit)
			if r.base > 0 {
				q := r.kezd / r.base
				ratio = fmt.Sprintf("%.2f", q)
				if r.goal != "" {
					met = "no"
					if (r.atMost && q <= r.limit) || (!r.atMost && q >= r.limit) {
						met = "yes"
					}
				}
			}
		}
		fmt.Fprintf(tw, "%s\t%.1f %s\t%s\t%s\t%s\t%s\t\t%s\t\n", r.name, r.kezd, r.unit, base, ratio, r.goal, met, r.note)
	}
	tw.Flush()
}
