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
	"runtime"
	"runtime/pprof"
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

// memoryResult is the server's memory growth per idle stream.
type memoryResult struct {
	streams        int
	heapPerStream  float64 // HeapInuse+StackInuse delta, bytes
	stackPerStream float64 // of which StackInuse
	rssPerStream   float64 // VmRSS delta, bytes (includes the GC's headroom)
	goroutinesEach float64
}

// serverMemory is the server's live Go memory after a full GC: heap in use
// plus goroutine stacks.
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

// idleMemory opens one stream for each of users on the server at addr (in
// this process) from a child process, waits until every stream is ready and
// the streams' setup has settled, and reports how much the server grew.
// With heapProfile set, it writes the server's heap profile there while the
// streams are open.
func idleMemory(ctx context.Context, exe, addr string, users []*user, settle time.Duration, heapProfile string) (memoryResult, error) {
	before, stack0, g0 := serverMemory()
	rss0 := vmRSS()

	cmd := exec.CommandContext(ctx, exe, childCommand, addr)
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return memoryResult{}, err
	}
	outPipe, err := cmd.StdoutPipe()
	if err != nil {
		return memoryResult{}, err
	}
	if err := cmd.Start(); err != nil {
		return memoryResult{}, err
	}
	defer func() {
		in.Close() // the child exits when its stdin ends, closing the streams
		_ = cmd.Wait()
	}()
	w := bufio.NewWriter(in)
	for _, u := range users {
		fmt.Fprintln(w, streamTarget(u))
	}
	fmt.Fprintln(w) // end of the list
	if err := w.Flush(); err != nil {
		return memoryResult{}, err
	}
	line, err := bufio.NewReader(outPipe).ReadString('\n')
	if err != nil {
		return memoryResult{}, fmt.Errorf("idle clients: %w", err)
	}
	if strings.TrimSpace(line) != "ready" {
		return memoryResult{}, fmt.Errorf("idle clients: %s", strings.TrimSpace(line))
	}
	// Each stream reads the store once more a second after setup (chat's
	// firstRecheck); measure the steady state after that.
	select {
	case <-ctx.Done():
		return memoryResult{}, ctx.Err()
	case <-time.After(settle):
	}
	after, stack1, g1 := serverMemory()
	rss1 := vmRSS()
	if heapProfile != "" {
		if err := writeHeapProfile(heapProfile); err != nil {
			return memoryResult{}, err
		}
	}
	n := float64(len(users))
	return memoryResult{
		streams:        len(users),
		heapPerStream:  (float64(after) - float64(before)) / n,
		stackPerStream: (float64(stack1) - float64(stack0)) / n,
		rssPerStream:   (float64(rss1) - float64(rss0)) / n,
		goroutinesEach: float64(g1-g0) / n,
	}, nil
}

// runIdleClients is the child: it reads stream targets (path and query),
// one a line up to an empty line, from stdin, opens each on addr, and
// prints "ready" once every one has sent its ready event (or the error).
// It then holds them, reading nothing, until stdin ends.
func runIdleClients(addr string, stdin io.Reader, stdout io.Writer) error {
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	sc := bufio.NewScanner(stdin)
	var targets []string
	for sc.Scan() && sc.Text() != "" {
		targets = append(targets, sc.Text())
	}
	conns := make([]net.Conn, len(targets))
	errs := make([]error, len(targets))
	next := make(chan int)
	var wg sync.WaitGroup
	for range 32 {
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
	fmt.Fprintln(stdout, "ready")
	_, _ = io.Copy(io.Discard, stdin)
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

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup("heap").WriteTo(f, 0), f.Close())
}
