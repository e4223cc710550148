package client

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

func TestEventReader(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		input string
		want  []sseEvent
		end   error
	}{
		{"one message", "id: 1\nevent: message\ndata: {}\n\n", []sseEvent{{"1", "message", "{}"}}, io.EOF},
		{"crlf and cr", "id: 2\r\nevent: message\r\ndata: x\r\n\r\nevent: ready\rdata: {\"latest\":2}\r\r",
			[]sseEvent{{"2", "message", "x"}, {"", "ready", `{"latest":2}`}}, io.EOF},
		{"comments and pings", ": ping\n\n: ping\nid: 3\ndata: a\n\n", []sseEvent{{"3", "", "a"}}, io.EOF},
		{"multi-line data", "data: a\ndata: b\ndata\n\n", []sseEvent{{"", "", "a\nb\n"}}, io.EOF},
		{"no space after colon", "event:ready\ndata:{}\n\n", []sseEvent{{"", "ready", "{}"}}, io.EOF},
		{"event without data is dropped", "event: ready\n\nid: 4\ndata: y\n\n", []sseEvent{{"4", "", "y"}}, io.EOF},
		{"cut mid-event", "id: 5\ndata: {\"seq\":5", nil, io.ErrUnexpectedEOF},
		{"cut before blank line", "id: 5\ndata: z\n", nil, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := newEventReader(strings.NewReader(tt.input))
			var got []sseEvent
			for {
				ev, err := r.next()
				if err != nil {
					if !errors.Is(err, tt.end) {
						t.Fatalf("ended with %v, want %v", err, tt.end)
					}
					break
				}
				got = append(got, ev)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("event %d: got %q, want %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestEventReaderBoundsLines(t *testing.T) {
	t.Parallel()
	r := newEventReader(strings.NewReader("data: " + strings.Repeat("x", maxEventSize+1) + "\n\n"))
	if _, err := r.next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("an oversized line gave %v", err)
	}
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := Backoff{Min: 100 * time.Millisecond, Max: time.Second}
	for n, ceil := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		ceil *= time.Millisecond
		for range 50 {
			if d := b.delay(n); d <= 0 || d > ceil {
				t.Fatalf("delay(%d) = %v, want in (0, %v]", n, d, ceil)
			}
		}
	}
}

func TestSendBodyKeepsEnvelopeBytes(t *testing.T) {
	t.Parallel()
	body, err := sendBody("bob", "id-1", []byte(`{"b":1.50,"a":"<&>"}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"to":"bob","id":"id-1","envelope":{"b":1.50,"a":"<&>"}}`; string(body) != want {
		t.Fatalf("body %s, want %s", body, want)
	}
	if _, err := sendBody("bob", "id-1", []byte(`{`)); err == nil {
		t.Fatal("accepted invalid JSON")
	}
}

func TestSilenceFor(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"15000", 37500 * time.Millisecond, true},
		{"200", 500 * time.Millisecond, true},
		{"1", 250 * time.Millisecond, true}, // at least 100 ms an interval
		{"600000", 25 * time.Minute, true},
		{"900000", 25 * time.Minute, true}, // at most 10 minutes: --sse-ping 15m is not cut every 35 s
		{"999999999", 25 * time.Minute, true},
		{"0", 250 * time.Millisecond, true},
		{"1000000000", 0, false},
		{"-5", 0, false},
		{"+5", 0, false},
		{"", 0, false},
		{"15s", 0, false},
		{" 15", 0, false},
	} {
		got, ok := silenceFor(tc.header)
		if got != tc.want || ok != tc.ok {
			t.Errorf("silenceFor(%q) = %v, %v; want %v, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}
