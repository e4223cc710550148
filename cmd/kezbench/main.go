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
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"
)

const envDatabaseURL = "KEZ_BENCH_DATABASE_URL"

func main() {
	if len(os.Args) == 3 && os.Args[1] == childCommand {
		if err := runIdleClients(os.Args[2], os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "kezbench idle clients:", err)
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

var scenarios = []string{"throughput", "latency", "memory"}

type config struct {
	duration   time.Duration
	senders    int
	streams    int
	rate       float64
	idle       int
	envelope   int
	settle     time.Duration
	cpuProfile string
	memProfile string
	scenarios  []string
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
	fs.IntVar(&c.senders, "senders", 16, "concurrent senders, each on its own keep-alive connection")
	fs.IntVar(&c.streams, "streams", 100, "open streams (on as many recipients) in the many-streams throughput run")
	fs.Float64Var(&c.rate, "rate", 500, "offered rate of the latency run, messages/s")
	fs.IntVar(&c.idle, "idle", 10000, "idle streams of the memory run")
	fs.IntVar(&c.envelope, "envelope", 1024, "envelope size, bytes of JSON")
	fs.DurationVar(&c.settle, "settle", 2*time.Second, "wait after the idle streams open before reading memory (streams re-read the store 1s after setup)")
	fs.StringVar(&c.memProfile, "memprofile", "", "write the server's heap profile with the idle streams open to this file")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run (server and load generator) to this file")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	c.scenarios = fs.Args()
	if len(c.scenarios) == 0 {
		c.scenarios = scenarios
	}
	for _, s := range c.scenarios {
		if !slices.Contains(scenarios, s) {
			return c, fmt.Errorf("unknown scenario %q (want %s)", s, joinScenarios())
		}
	}
	if c.duration <= 0 || c.senders < 1 || c.streams < 1 || c.rate <= 0 || c.idle < 1 || c.envelope < 16 {
		return c, errors.New("-duration, -senders, -streams, -rate, -idle must be positive and -envelope at least 16")
	}
	return c, nil
}

func joinScenarios() string {
	s := ""
	for i, n := range scenarios {
		if i > 0 {
			s += "|"
		}
		s += n
	}
	return s
}

// run is kezbench without the process, so a test can run it.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	limit, err := raiseFileLimit()
	if err != nil {
		return fmt.Errorf("raise the file limit: %w", err)
	}
	if need := uint64(cfg.idle) + 1000; slices.Contains(cfg.scenarios, "memory") && limit < need {
		return fmt.Errorf("%d idle streams need a file limit of about %d; the hard limit is %d (lower -idle)", cfg.idle, need, limit)
	}

	fmt.Fprintln(stderr, "kezbench: starting Postgres, kezd and the baseline")
	db, err := openDatabase(ctx, getenv(envDatabaseURL))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, db.drop()) }()
	kezd, err := startKezd(ctx, db.URL, log)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, kezd.close()) }()
	base, err := startBaseline(ctx, db.URL, int32(cfg.senders))
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, base.close()) }()

	senders, err := newUsers("s", cfg.senders)
	if err != nil {
		return err
	}
	recipients, err := newUsers("r", cfg.streams)
	if err != nil {
		return err
	}
	var idle []*user
	if slices.Contains(cfg.scenarios, "memory") {
		if idle, err = newUsers("i", cfg.idle); err != nil {
			return err
		}
	}
	if err := seed(ctx, db.URL, slices.Concat(senders, recipients, idle)); err != nil {
		return err
	}
	l := &load{senders: senders, envelope: benchEnvelope(cfg.envelope), run: strconv.FormatInt(time.Now().UnixNano(), 36)}

	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var rows []row
	for _, sc := range cfg.scenarios {
		switch sc {
		case "throughput":
			for _, rs := range [][]*user{recipients[:1], recipients} {
				name := fmt.Sprintf("deliveries/s, %d stream(s) on %d recipient(s)", len(rs), len(rs))
				fmt.Fprintf(stderr, "kezbench: %s, %s each\n", name, cfg.duration)
				k, kSent, kLost, err := l.throughput(ctx, kezd.addr, rs, cfg.duration)
				if err != nil {
					return fmt.Errorf("kezd %s: %w", name, err)
				}
				if kLost > 0 {
					return fmt.Errorf("kezd %s: %d of %d messages never reached their stream", name, kLost, kSent)
				}
				b, bSent, bLost, err := l.throughput(ctx, base.addr, rs, cfg.duration)
				if err != nil {
					return fmt.Errorf("baseline %s: %w", name, err)
				}
				note := fmt.Sprintf("sent %d / %d", kSent, bSent)
				if bLost > 0 {
					note += fmt.Sprintf("; baseline lost %d", bLost)
				}
				rows = append(rows, row{name: name, kezd: k, base: b, unit: "/s", goal: "≥ 0.70", ok: k >= 0.7*b, note: note})
			}
			if len(recipients) == 1 {
				rows = rows[:len(rows)-1] // the same run twice
			}
		case "latency":
			fmt.Fprintf(stderr, "kezbench: POST→SSE latency at %g msg/s, %s each\n", cfg.rate, cfg.duration)
			k, err := l.latency(ctx, kezd.addr, recipients[0], cfg.rate, cfg.duration)
			if err != nil {
				return fmt.Errorf("kezd latency: %w", err)
			}
			b, err := l.latency(ctx, base.addr, recipients[0], cfg.rate, cfg.duration)
			if err != nil {
				return fmt.Errorf("baseline latency: %w", err)
			}
			k, b = sortedCopy(k), sortedCopy(b)
			for _, p := range []float64{50, 99} {
				kp, bp := percentile(k, p), percentile(b, p)
				r := row{name: fmt.Sprintf("POST→SSE p%g at %g msg/s", p, cfg.rate), kezd: ms(kp), base: ms(bp), unit: "ms",
					note: fmt.Sprintf("%d messages", len(k))}
				if p == 99 {
					r.goal, r.ok = "≤ 2.00", kp <= 2*bp
				}
				rows = append(rows, r)
			}
		case "memory":
			fmt.Fprintf(stderr, "kezbench: memory of %d idle streams\n", len(idle))
			m, err := idleMemory(ctx, exe, kezd.addr, idle, cfg.settle, cfg.memProfile)
			if err != nil {
				return fmt.Errorf("idle streams: %w", err)
			}
			rows = append(rows,
				row{name: fmt.Sprintf("server heap+stacks per idle stream (%d)", m.streams), kezd: m.heapPerStream / 1024, unit: "KiB",
					goal: "≤ 20 KiB", ok: m.heapPerStream <= 20<<10, noBase: true, note: fmt.Sprintf("stacks %.1f KiB, %.1f goroutines/stream", m.stackPerStream/1024, m.goroutinesEach)},
				row{name: fmt.Sprintf("server RSS per idle stream (%d)", m.streams), kezd: m.rssPerStream / 1024, unit: "KiB", noBase: true,
					note: "includes GC headroom"})
		}
	}
	printTable(stdout, cfg, rows)
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// row is one line of the report.
type row struct {
	name       string
	kezd, base float64
	unit       string
	noBase     bool
	goal       string
	ok         bool
	note       string
}

func printTable(w io.Writer, cfg config, rows []row) {
	fmt.Fprintf(w, "\nkezbench: %d senders, %d-byte envelopes, Postgres fsync on, loopback; %s per run\n\n", cfg.senders, cfg.envelope, cfg.duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "metric\tkezd\tbaseline\tratio\tgoal\tmet\t\tnote\t")
	for _, r := range rows {
		base, ratio := "-", "-"
		if !r.noBase {
			base = fmt.Sprintf("%.1f %s", r.base, r.unit)
			if r.base > 0 {
				ratio = fmt.Sprintf("%.2f", r.kezd/r.base)
			}
		}
		met := ""
		if r.goal != "" {
			met = "no"
			if r.ok {
				met = "yes"
			}
		}
		fmt.Fprintf(tw, "%s\t%.1f %s\t%s\t%s\t%s\t%s\t\t%s\t\n", r.name, r.kezd, r.unit, base, ratio, r.goal, met, r.note)
	}
	tw.Flush()
}
