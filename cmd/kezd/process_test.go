package main

import (
	"bufio"
	"os/exec"
	"regexp"
	"testing"
	"time"
)

// process is a program a test runs, with its stderr read line by line.
type process struct {
	t     *testing.T
	cmd   *exec.Cmd
	lines chan string // closed when the program's stderr ends
}

// startProcess starts bin with args; it is killed when the test ends.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	p := &process{t: t, cmd: cmd, lines: make(chan string, 100)}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
	}()
	return p
}

// waitLine reads the log until a line matches re and returns the match.
func (p *process) waitLine(re *regexp.Regexp) []string {
	p.t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("%s exited before logging %v", p.cmd.Path, re)
			}
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-timeout:
			p.t.Fatalf("%s did not log %v", p.cmd.Path, re)
		}
	}
}

// drain reads the rest of the log, so that the program never blocks on a
// full pipe, until it ends.
func (p *process) drain() {
	for range p.lines {
	}
}
