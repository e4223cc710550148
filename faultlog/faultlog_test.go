package faultlog

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestOutageLogsOnceThenSummariesThenRecovery(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), 10*time.Second)
	clock := time.Unix(1000, 0)
	l.now = func() time.Time { return clock }
	boom := errors.New("connection refused")

	l.OK("store") // not failing: nothing to say
	// A 25 s outage with 100 failures a second.
	for i := range 2500 {
		clock = time.Unix(1000, 0).Add(time.Duration(i) * 10 * time.Millisecond)
		l.Fail("store", boom)
	}
	l.OK("store")
	l.OK("store") // recovered once only

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var kinds []string
	for _, line := range lines {
		switch {
		case strings.Contains(line, `msg="store failing"`):
			kinds = append(kinds, "first")
		case strings.Contains(line, `msg="store still failing"`):
			kinds = append(kinds, "summary")
		case strings.Contains(line, `msg="store recovered"`):
			kinds = append(kinds, "recovered")
			if !strings.Contains(line, "failures_total=2500") {
				t.Errorf("recovery line %q does not count the 2500 failures", line)
			}
		default:
			t.Errorf("unexpected line %q", line)
		}
	}
	want := "[first summary summary recovered]"
	if got := strings.Join([]string{"[", strings.Join(kinds, " "), "]"}, ""); got != want {
		t.Errorf("a 25 s outage logged %s, want %s:\n%s", got, want, buf.String())
	}
	if !strings.Contains(lines[1], "failures=1000") {
		t.Errorf("first summary %q does not count the 1000 failures since the first line", lines[1])
	}

	// A new outage is reported afresh.
	buf.Reset()
	l.Fail("store", boom)
	if !strings.Contains(buf.String(), `msg="store failing"`) {
		t.Errorf("a second outage logged %q, want a new first line", buf.String())
	}
}

func TestDependenciesAreSeparate(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewTextHandler(&buf, nil)), 0)
	l.Fail("store", errors.New("a"))
	l.Fail("nats", errors.New("b"))
	l.OK("store")
	out := buf.String()
	for _, want := range []string{`msg="store failing"`, `msg="nats failing"`, `msg="store recovered"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "nats recovered") {
		t.Errorf("nats reported recovered when only the store was:\n%s", out)
	}
}
