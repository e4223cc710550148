package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/kez-chat/kezd/store/postgres"
)

// Each server under load (kezd or the baseline) runs in a child process of
// its own, so that its CPU time can be read from /proc/<pid>/stat apart from
// the load generator's and the other server's, and its memory and profiles
// hold nothing but the server.
//
// The child is this binary run as `kezbench serve <kind> <database URL>
// <connections> <commit workers>` (the baseline's pool size; kezd's
// postgres.Config.CommitWorkers, 0 for its default). It prints "addr <host:port>" once it serves, then answers
// one command a line on stdin, each with one line ("ok", or the result, or
// "error: …"), until stdin ends; then it shuts the server down and exits:
//
//	cpu-start <file>   start a CPU profile
//	cpu-stop           stop it
//	profile <name> <file>  write a runtime/pprof profile (allocs is cumulative since start)
//	mem                "<heap+stacks> <stacks> <goroutines> <rss>", after a GC
//	batches            "<batches> <appends>" of kezd's group commit (0 0 for the baseline)
//	reads              "<reads> <queries>" of kezd's batched point reads (0 0 for the baseline)
const serveCommand = "serve"

// child runs a hidden child command of kezbench, if args name one.
func child(args []string) (ran bool, err error) {
	switch {
	case len(args) == 2 && args[0] == childCommand:
		return true, runIdleClients(args[1], os.Stdin, os.Stdout)
	case len(args) == 5 && args[0] == serveCommand:
		conns, err1 := strconv.Atoi(args[3])
		workers, err2 := strconv.Atoi(args[4])
		if err := errors.Join(err1, err2); err != nil {
			return true, err
		}
		return true, runServer(args[1], args[2], int32(conns), workers, os.Stdin, os.Stdout)
	}
	return false, nil
}

// runServer is the server child.
func runServer(kind, dbURL string, conns int32, commitWorkers int, stdin io.Reader, stdout io.Writer) error {
	if _, err := raiseFileLimit(); err != nil {
		return err
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var t *target
	var err error
	switch kind {
	case "kezd":
		t, err = startKezd(ctx, dbURL, commitWorkers, log)
	case "baseline":
		t, err = startBaseline(ctx, dbURL, conns, false)
	case "baseline-global":
		t, err = startBaseline(ctx, dbURL, conns, true)
	default:
		err = fmt.Errorf("unknown server %q", kind)
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "addr", t.addr)
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		var reply string
		var err error
		switch cmd {
		case "cpu-start":
			var f *os.File
			if f, err = os.Create(arg); err == nil {
				err = pprof.StartCPUProfile(f)
			}
			reply = "ok"
		case "cpu-stop":
			pprof.StopCPUProfile()
			reply = "ok"
		case "profile": // profile <name> <file>: allocs, heap, goroutine…
			name, file, _ := strings.Cut(arg, " ")
			err = writeProfile(name, file)
			reply = "ok"
		case "batches":
			var st postgres.BatchStats
			if t.batches != nil {
				st = t.batches()
			}
			reply = fmt.Sprintf("%d %d", st.Batches, st.Appends)
		case "reads":
			var st postgres.ReadStats
			if t.reads != nil {
				st = t.reads()
			}
			reply = fmt.Sprintf("%d %d", st.Reads, st.Queries)
		case "mem":
			hs, st, g := serverMemory()
			reply = fmt.Sprintf("%d %d %d %d", hs, st, g, vmRSS())
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		if err != nil {
			reply = "error: " + err.Error()
		}
		fmt.Fprintln(stdout, reply)
	}
	return t.close()
}

func writeProfile(name, path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	return errors.Join(pprof.Lookup(name).WriteTo(f, 0), f.Close())
}

// serverProc is a server child as the load generator sees it.
type serverProc struct {
	name string
	addr string
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
}

// startServer starts the server child of kind ("kezd", "baseline", or
// "baseline-global": the baseline with one seq for every inbox).
func startServer(ctx context.Context, exe, kind, dbURL string, conns, commitWorkers int) (*serverProc, error) {
	cmd := exec.CommandContext(ctx, exe, serveCommand, kind, dbURL, strconv.Itoa(conns), strconv.Itoa(commitWorkers))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &serverProc{name: kind, cmd: cmd, in: in, out: bufio.NewReader(out)}
	line, err := p.out.ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "addr ")
	if err != nil || !ok {
		return nil, errors.Join(fmt.Errorf("%s did not start (%q)", kind, line), err, p.close())
	}
	p.addr = addr
	return p, nil
}

// do sends one command and returns its answer.
func (p *serverProc) do(cmd string) (string, error) {
	if _, err := fmt.Fprintln(p.in, cmd); err != nil {
		return "", err
	}
	line, err := p.out.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", p.name, cmd, err)
	}
	line = strings.TrimSpace(line)
	if e, ok := strings.CutPrefix(line, "error: "); ok {
		return "", fmt.Errorf("%s %s: %s", p.name, cmd, e)
	}
	return line, nil
}

// close ends the child: it shuts its server down when its stdin ends.
func (p *serverProc) close() error {
	p.in.Close()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		return fmt.Errorf("%s did not exit", p.name)
	}
}

// clockTick is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// cpu is the child's CPU time so far, user plus system, all threads
// (utime and stime of /proc/<pid>/stat).
func (p *serverProc) cpu() (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, errors.New("unreadable /proc stat")
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3
	if len(f) < 13 {
		return 0, errors.New("short /proc stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(u+s) * clockTick, nil
}

// scan sends cmd and reads its answer's space-separated fields into into.
func (p *serverProc) scan(cmd string, into ...any) error {
	line, err := p.do(cmd)
	if err != nil {
		return err
	}
	_, err = fmt.Sscan(line, into...)
	return err
}

// batches is the child's group-commit count so far.
func (p *serverProc) batches() (st postgres.BatchStats, err error) {
	err = p.scan("batches", &st.Batches, &st.Appends)
	return st, err
}

// reads is the child's batched point reads so far.
func (p *serverProc) reads() (st postgres.ReadStats, err error) {
	err = p.scan("reads", &st.Reads, &st.Queries)
	return st, err
}

// memory is the child's live Go memory after a GC and its RSS.
func (p *serverProc) memory() (heapStack, stack uint64, goroutines int, rss uint64, err error) {
	err = p.scan("mem", &heapStack, &stack, &goroutines, &rss)
	return heapStack, stack, goroutines, rss, err
}
