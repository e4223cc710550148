package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// childCommand is the hidden command that runs the idle streams' clients
// in a child process, so that their memory and descriptors are not the
// server's: the server's heap is then read without them in it.
const childCommand = "idle-clients"

// serverMemory is this process's live Go memory after a full GC: heap in
// use plus goroutine stacks.
func serverMemory() (heapStack, stack uint64, goroutines int) {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse, m.StackInuse, runtime.NumGoroutine()
}

// vmRSS reads this process's resident set size from /proc.
func vmRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// raiseFileLimit raises the soft RLIMIT_NOFILE to the hard limit and
// returns it.
func raiseFileLimit() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// idleResult is what n idle streams cost a server.
type idleResult struct {
	streams    int
	openTime   time.Duration // from the first dial to the last ready event
	openRate   float64       // streams per second
	cpuPerOpen float64       // server CPU µs per stream opened
	// openReads and openQueries are kezd's batched point reads while the
	// streams opened, and the queries that answered them (0 for the
	// baseline).
	openReads, openQueries int64
	idleCPU                float64       // server CPU, share of one core, with the streams open and nothing sent
	lat                    latencyResult // at the configured rate, with the streams open
	heapPerStream          float64       // HeapInuse+StackInuse delta, bytes
	stackPerStream         float64       // of which StackInuse
	rssPerStream           float64       // VmRSS delta, bytes (includes the GC's headroom)
	goroutinesEach         float64
}

// idle opens one stream for each of users on p from a child process,
// cfg.storm at a time, and measures how fast they open, what they cost
// the server in memory and in CPU while nothing is sent, and the latency
// and CPU per message of a latency run to recipient with them open.
func (l *load) idle(ctx context.Context, exe string, p *serverProc, users []*user, recipient *user, cfg config) (idleResult, error) {
	before, stack0, g0, rss0, err := p.memory()
	if err != nil {
		return idleResult{}, err
	}
	cmd := exec.CommandContext(ctx, exe, childCommand, p.addr)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return idleResult{}, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return idleResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return idleResult{}, err
	}
	defer func() {
		in.Close() // the child exits when its stdin ends, closing the streams
		_ = cmd.Wait()
	}()
	w := bufio.NewWriter(in)
	fmt.Fprintln(w, cfg.storm)
	for _, u := range users {
		fmt.Fprintln(w, streamTarget(u))
	}
	fmt.Fprintln(w) // end of the list
	if err := w.Flush(); err != nil {
		return idleResult{}, err
	}
	out := bufio.NewReader(outPipe)
	if _, err := out.ReadString('\n'); err != nil { // "listed"
		return idleResult{}, fmt.Errorf("idle clients: %w", err)
	}
	profile := func(cmd, kind string) error {
		if cfg.profileDir == "" {
			return nil
		}
		if kind != "" {
			cmd += " " + filepath.Join(cfg.profileDir, p.name+"."+kind+".pprof")
		}
		_, err := p.do(cmd)
		return err
	}
	// With -profile, the opening and the idle window are profiled too (the
	// profiler's own cost is in their CPU figures then).
	if err := profile("cpu-start", "open-cpu"); err != nil {
		return idleResult{}, err
	}
	reads0, err := p.reads()
	if err != nil {
		return idleResult{}, err
	}
	cpu0, err := p.cpu()
	if err != nil {
		return idleResult{}, err
	}
	if _, err := fmt.Fprintln(in, "go"); err != nil {
		return idleResult{}, err
	}
	line, err := out.ReadString('\n')
	if err != nil {
		return idleResult{}, fmt.Errorf("idle clients: %w", err)
	}
	cpu1, err := p.cpu()
	if err != nil {
		return idleResult{}, err
	}
	if err := profile("cpu-stop", ""); err != nil {
		return idleResult{}, err
	}
	reads1, err := p.reads()
	if err != nil {
		return idleResult{}, err
	}
	var elapsed time.Duration
	if ns, ok := strings.CutPrefix(strings.TrimSpace(line), "ready "); !ok {
		return idleResult{}, fmt.Errorf("idle clients: %s", strings.TrimSpace(line))
	} else if n, err := strconv.ParseInt(ns, 10, 64); err != nil {
		return idleResult{}, fmt.Errorf("idle clients: %q", line)
	} else {
		elapsed = time.Duration(n)
	}
	n := float64(len(users))
	res := idleResult{streams: len(users), openTime: elapsed, openRate: n / elapsed.Seconds(), cpuPerOpen: µs(cpu1-cpu0) / n,
		openReads: reads1.Reads - reads0.Reads, openQueries: reads1.Queries - reads0.Queries}

	// Each stream reads the store once more a second after setup (chat's
	// DefaultRecheck); measure the steady state after that.
	if err := sleep(ctx, cfg.settle); err != nil {
		return idleResult{}, err
	}
	after, stack1, g1, rss1, err := p.memory()
	if err != nil {
		return idleResult{}, err
	}
	res.heapPerStream = (float64(after) - float64(before)) / n
	res.stackPerStream = (float64(stack1) - float64(stack0)) / n
	res.rssPerStream = (float64(rss1) - float64(rss0)) / n
	res.goroutinesEach = float64(g1-g0) / n

	if err := profile("cpu-start", "idle-cpu"); err != nil {
		return idleResult{}, err
	}
	c0, err := p.cpu()
	if err != nil {
		return idleResult{}, err
	}
	if err := sleep(ctx, cfg.idleWindow); err != nil {
		return idleResult{}, err
	}
	c1, err := p.cpu()
	if err != nil {
		return idleResult{}, err
	}
	if err := profile("cpu-stop", ""); err != nil {
		return idleResult{}, err
	}
	res.idleCPU = float64(c1-c0) / float64(cfg.idleWindow)

	if res.lat, err = l.latency(ctx, p, []*user{recipient}, cfg.rate, cfg.duration); err != nil {
		return idleResult{}, err
	}
	if cfg.profileDir != "" {
		// The heap with the streams open: what an idle stream holds.
		if _, err := p.do("profile heap " + filepath.Join(cfg.profileDir, p.name+".idle-heap.pprof")); err != nil {
			return idleResult{}, err
		}
	}
	return res, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// runIdleClients is the child: it reads how many streams to open at a
// time, then stream targets (path and query), one a line up to an empty
// line, from stdin; prints "listed", waits for a line "go", opens each on
// addr, and prints
// "ready <ns>", the nanoseconds from the first dial until every stream had
// sent its ready event (or the error). It then holds them, reading
// nothing, until stdin ends.
func runIdleClients(addr string, stdin io.Reader, stdout io.Writer) error {
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdin)
	if !sc.Scan() {
		return errors.New("no concurrency on stdin")
	}
	workers, err := strconv.Atoi(sc.Text())
	if err != nil || workers < 1 {
		return fmt.Errorf("concurrency %q", sc.Text())
	}
	var targets []string
	for sc.Scan() && sc.Text() != "" {
		targets = append(targets, sc.Text())
	}
	conns := make([]net.Conn, len(targets))
	errs := make([]error, len(targets))
	next := make(chan int)
	fmt.Fprintln(stdout, "listed")
	if !sc.Scan() {
		return errors.New("no go")
	}
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range next {
				conns[i], errs[i] = openIdle(addr, targets[i])
			}
		})
	}
	for i := range targets {
		next <- i
	}
	close(next)
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stdout, "error: %v\n", strings.ReplaceAll(err.Error(), "\n", "; "))
		return err
	}
	fmt.Fprintln(stdout, "ready", time.Since(start).Nanoseconds())
	for sc.Scan() { // until stdin ends
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// openIdle opens a stream and reads until its ready event.
func openIdle(addr, target string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := c.Write(streamRequest(target)); err != nil {
		c.Close()
		return nil, err
	}
	var seen []byte
	buf := make([]byte, 4096)
	for !strings.Contains(string(seen), "event: ready") {
		n, err := c.Read(buf)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("waiting for ready: %w (got %q)", err, seen)
		}
		seen = append(seen, buf[:n]...)
		if strings.Contains(string(seen), "\r\n\r\n") && !strings.HasPrefix(string(seen), "HTTP/1.1 200") {
			c.Close()
			return nil, fmt.Errorf("stream: %q", seen)
		}
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
