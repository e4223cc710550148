package chat

import (
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/protocol"
)

func TestParseSend(t *testing.T) {
	t.Parallel()
	big := `{"x":"` + strings.Repeat("a", protocol.MaxEnvelope) + `"}`
	tests := []struct {
		name     string
		body     string
		code     protocol.Code // "" when accepted
		envelope string        // the stored envelope when accepted
	}{
		{"valid", `{"to":"bob","id":"m1","envelope":{"b":1,"a":"<&>"}}`, "", `{"b":1,"a":"<&>"}`},
		{"whitespace removed, spelling kept", `{"to":"bob","id":"m1","envelope": { "n" : 1.0e2 , "s":"\u003c" } }`, "", `{"n":1.0e2,"s":"\u003c"}`},
		{"string envelope", `{"to":"bob","id":"m1","envelope":"opaque"}`, "", `"opaque"`},
		{"not json", `{"to":`, protocol.CodeInvalidRequest, ""},
		{"array body", `[]`, protocol.CodeInvalidRequest, ""},
		{"missing to", `{"id":"m1","envelope":{}}`, protocol.CodeInvalidRequest, ""},
		{"bad to", `{"to":"Bob","id":"m1","envelope":{}}`, protocol.CodeInvalidHandle, ""},
		{"wildcard to", `{"to":">","id":"m1","envelope":{}}`, protocol.CodeInvalidHandle, ""},
		{"missing id", `{"to":"bob","envelope":{}}`, protocol.CodeInvalidRequest, ""},
		{"bad id", `{"to":"bob","id":"a.b","envelope":{}}`, protocol.CodeInvalidRequest, ""},
		{"long id", `{"to":"bob","id":"` + strings.Repeat("x", 65) + `","envelope":{}}`, protocol.CodeInvalidRequest, ""},
		{"missing envelope", `{"to":"bob","id":"m1"}`, protocol.CodeInvalidRequest, ""},
		{"null envelope", `{"to":"bob","id":"m1","envelope":null}`, protocol.CodeInvalidRequest, ""},
		{"too large", `{"to":"bob","id":"m1","envelope":` + big + `}`, protocol.CodeTooLarge, ""},
		{"invalid utf-8", "{\"to\":\"bob\",\"id\":\"m1\",\"envelope\":\"\xff\"}", protocol.CodeInvalidRequest, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseSend([]byte(tt.body))
			if tt.code == "" {
				if err != nil {
					t.Fatalf("ParseSend: %v", err)
				}
				if string(r.Envelope) != tt.envelope {
					t.Fatalf("envelope = %s, want %s", r.Envelope, tt.envelope)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != tt.code {
				t.Fatalf("ParseSend = %v, want code %s", err, tt.code)
			}
		})
	}
}

func TestAsError(t *testing.T) {
	t.Parallel()
	cause := errors.New("disk on fire")
	e := AsError(cause)
	if e.Code != protocol.CodeInternal || strings.Contains(e.Message, "disk") || !errors.Is(e, cause) {
		t.Fatalf("AsError = %+v", e)
	}
	orig := Errorf(protocol.CodeForbidden, "no")
	if AsError(orig) != orig {
		t.Fatal("AsError must keep an *Error")
	}
}

func TestParseRegister(t *testing.T) {
	t.Parallel()
	full := `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1,"sig":"x"}`
	r, err := ParseRegister([]byte(full))
	if err != nil || r.Handle != "alice" || r.TS != 1 {
		t.Fatalf("ParseRegister = %+v, %v", r, err)
	}
	tests := []struct{ name, body, msg string }{
		{"no ts", `{"handle":"alice","signing_key":"s","encryption_key":"e","sig":"x"}`, "ts is required"},
		{"no handle", `{"signing_key":"s","encryption_key":"e","ts":1,"sig":"x"}`, "handle is required"},
		{"no sig", `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1}`, "sig is required"},
		{"ts as string", `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":"1","sig":"x"}`, "field ts must be a JSON number"},
		{"array", `[]`, "body must be a JSON object"},
		{"truncated", `{"handle":`, "body is not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRegister([]byte(tt.body))
			var e *Error
			if !errors.As(err, &e) || e.Code != protocol.CodeInvalidRequest || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("ParseRegister = %v, want invalid_request %q", err, tt.msg)
			}
			if strings.Contains(e.Message, "Go ") || strings.Contains(e.Message, "int64") {
				t.Fatalf("message %q leaks Go types", e.Message)
			}
		})
	}
}

func TestParseRotate(t *testing.T) {
	t.Parallel()
	r, err := ParseRotate([]byte(`{"signing_key":"s","encryption_key":"e","ts":1,"sig":"x","new_sig":"y"}`))
	if err != nil || r.SigningKey != "s" || r.NewSig != "y" || r.TS != 1 {
		t.Fatalf("ParseRotate = %+v, %v", r, err)
	}
	tests := []struct{ name, body, msg string }{
		{"no new_sig", `{"signing_key":"s","encryption_key":"e","ts":1,"sig":"x"}`, "new_sig is required"},
		{"null signing_key", `{"signing_key":null,"encryption_key":"e","ts":1,"sig":"x","new_sig":"y"}`, "signing_key is required"},
		{"no ts", `{"signing_key":"s","encryption_key":"e","sig":"x","new_sig":"y"}`, "ts is required"},
		{"ts as string", `{"signing_key":"s","encryption_key":"e","ts":"1","sig":"x","new_sig":"y"}`, "field ts must be a JSON number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseRotate([]byte(tt.body))
			var e *Error
			if !errors.As(err, &e) || e.Code != protocol.CodeInvalidRequest || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("ParseRotate = %v, want invalid_request %q", err, tt.msg)
			}
		})
	}
}

func TestMarshalKeepsEnvelopeBytes(t *testing.T) {
	t.Parallel()
	b, err := protocol.Marshal(struct {
		Envelope json.RawMessage `json:"envelope"`
	}{json.RawMessage(`{"h":"<b>&amp;</b>","n":1.50}`)})
	if err != nil || string(b) != `{"envelope":{"h":"<b>&amp;</b>","n":1.50}}` {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	if body, _ := protocol.Marshal(Errorf(protocol.CodeForbidden, "no <way>").Body()); string(body) != `{"error":"forbidden","message":"no <way>"}` {
		t.Fatalf("error body = %s", body)
	}
}

// liveServer is a Live that only says whether its interest is immediate.
type liveServer struct {
	Live
	immediate bool
}

func (l liveServer) InterestImmediate() bool { return l.immediate }

// A stream's first safety-net read comes a second after setup where a
// cluster's interest may lag, and only with the periodic ones on one NATS
// server; a configured Recheck always wins.
func TestFirstRecheck(t *testing.T) {
	t.Parallel()
	periodic := func(d time.Duration) bool {
		return d >= DefaultRecheckEvery*4/5 && d <= DefaultRecheckEvery*6/5
	}
	for _, c := range []struct {
		name string
		cfg  Config
		live Live
		want func(time.Duration) bool
	}{
		{"cluster, default", Config{}, liveServer{immediate: false}, func(d time.Duration) bool { return d == DefaultRecheck }},
		{"one server, default", Config{}, liveServer{immediate: true}, periodic},
		{"one server, configured", Config{Recheck: 3 * time.Second}, liveServer{immediate: true}, func(d time.Duration) bool { return d == 3*time.Second }},
		{"a Live that cannot tell", Config{}, struct{ Live }{}, func(d time.Duration) bool { return d == DefaultRecheck }},
	} {
		s := New(c.cfg, nil, nil, c.live, slog.New(slog.DiscardHandler))
		if d := s.firstRecheck(); !c.want(d) {
			t.Errorf("%s: first recheck after %s", c.name, d)
		}
	}
}

// TestStrictBodies: one signed body means one thing. encoding/json alone
// matches member names case-insensitively and keeps the last duplicate.
func TestStrictBodies(t *testing.T) {
	t.Parallel()
	reg := func(extra string) string {
		return `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1,"sig":"x"` + extra + `}`
	}
	tests := []struct {
		name  string
		parse func([]byte) error
		body  string
		msg   string
	}{
		{"send: to and TO", parseSend, `{"to":"bob","TO":"carol","id":"m1","envelope":{}}`, `unknown member "TO"`},
		{"send: two to", parseSend, `{"to":"bob","to":"carol","id":"m1","envelope":{}}`, `"to" appears more than once`},
		{"send: To only", parseSend, `{"To":"bob","id":"m1","envelope":{}}`, `unknown member "To"`},
		{"send: two envelopes", parseSend, `{"to":"bob","id":"m1","envelope":1,"envelope":2}`, "more than once"},
		{"send: unknown member", parseSend, `{"to":"bob","id":"m1","envelope":{},"cc":"carol"}`, `unknown member "cc"`},
		{"send: trailing data", parseSend, `{"to":"bob","id":"m1","envelope":{}} {}`, "data after"},
		{"send: leading zero in a number", parseSend, `{"to":"bob","id":"m1","envelope":007}`, "not valid JSON"},
		{"send: envelope too deep", parseSend, `{"to":"bob","id":"m1","envelope":` + strings.Repeat("[", protocol.MaxEnvelopeDepth+1) + strings.Repeat("]", protocol.MaxEnvelopeDepth+1) + `}`, "deep"},
		{"send: envelope 9999 deep", parseSend, `{"to":"bob","id":"m1","envelope":` + strings.Repeat("[", 9999) + strings.Repeat("]", 9999) + `}`, "deep"},
		{"rotate: new_sig twice", parseRotate, `{"signing_key":"s","encryption_key":"e","ts":1,"sig":"x","new_sig":"y","new_sig":"z"}`, "more than once"},
		{"rotate: Signing_Key", parseRotate, `{"signing_key":"s","Signing_Key":"t","encryption_key":"e","ts":1,"sig":"x","new_sig":"y"}`, `unknown member "Signing_Key"`},
		{"register: ts twice", parseRegister, reg(`,"ts":2`), "more than once"},
		{"register: Handle", parseRegister, reg(`,"Handle":"mallory"`), `unknown member "Handle"`},
		{"register: leading zero ts", parseRegister, `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":01,"sig":"x"}`, "not valid JSON"},
		{"register: fractional ts", parseRegister, `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1.5,"sig":"x"}`, "field ts must be a JSON number"},
		{"register: null ts", parseRegister, `{"handle":"alice","signing_key":"s","encryption_key":"e","ts":null,"sig":"x"}`, "ts is required"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := tt.parse([]byte(tt.body))
			var e *Error
			if !errors.As(err, &e) || e.Code != protocol.CodeInvalidRequest || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("parse(%.80s) = %v, want invalid_request %q", tt.body, err, tt.msg)
			}
		})
	}
	// At the limit is fine.
	deep := strings.Repeat("[", protocol.MaxEnvelopeDepth) + strings.Repeat("]", protocol.MaxEnvelopeDepth)
	if err := parseSend([]byte(`{"to":"bob","id":"m1","envelope":` + deep + `}`)); err != nil {
		t.Fatalf("envelope %d deep: %v", protocol.MaxEnvelopeDepth, err)
	}
	// Brackets inside strings are not nesting.
	if err := parseSend([]byte(`{"to":"bob","id":"m1","envelope":"` + strings.Repeat(`[\"{`, 100) + `"}`)); err != nil {
		t.Fatalf("brackets in a string: %v", err)
	}
}

func parseSend(b []byte) error     { _, err := ParseSend(b); return err }
func parseRegister(b []byte) error { _, err := ParseRegister(b); return err }
func parseRotate(b []byte) error   { _, err := ParseRotate(b); return err }

func TestJSONDepth(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		v    string
		want int
	}{
		{`1`, 0}, {`"[[["`, 0}, {`[]`, 1}, {`{"a":[{}]}`, 3}, {`["\"[",[]]`, 2}, {`[{"\\":[1]}]`, 3},
	} {
		if got := jsonDepth([]byte(tt.v), 100); got != tt.want {
			t.Errorf("jsonDepth(%s) = %d, want %d", tt.v, got, tt.want)
		}
	}
}

// TestScanSend: the one-pass reader takes the common shape of a send body
// (the strict decoder is the fallback, so a body it passes over is still
// parsed, and FuzzParseSend checks they agree), and passes over anything
// else, valid or not.
func TestScanSend(t *testing.T) {
	t.Parallel()
	deep := strings.Repeat("[", protocol.MaxEnvelopeDepth) + strings.Repeat("]", protocol.MaxEnvelopeDepth)
	tests := []struct {
		name string
		body string
		take bool
	}{
		{"common", `{"to":"bob","id":"m-1","envelope":{"v":1,"ct":"AAAA","k":[1,2,3]}}`, true},
		{"any order, spaces between members", " {\"envelope\":{\"a\":[true,false,null,-1.5e+3,0]} ,\n\"id\" : \"x\", \"to\":\"a\"} ", true},
		{"escapes in the envelope", `{"to":"bob","id":"m1","envelope":"\u00e9\"\\\/\b\f\n\r\t"}`, true},
		{"at the depth limit", `{"to":"bob","id":"m1","envelope":` + deep + `}`, true},
		{"past the depth limit", `{"to":"bob","id":"m1","envelope":[` + deep + `]}`, false},
		{"whitespace in the envelope", `{"to":"bob","id":"m1","envelope":{"a": 1}}`, false},
		{"escape in to", `{"to":"b\u006fb","id":"m1","envelope":{}}`, false},
		{"null id", `{"to":"bob","id":null,"envelope":{}}`, false},
		{"no id", `{"to":"bob","envelope":{}}`, false},
		{"unknown member", `{"to":"bob","id":"m1","envelope":{},"cc":"x"}`, false},
		{"twice to", `{"to":"bob","to":"bob","id":"m1","envelope":{}}`, false},
		{"leading zero", `{"to":"bob","id":"m1","envelope":01}`, false},
		{"bad escape", `{"to":"bob","id":"m1","envelope":"\x"}`, false},
		{"short unicode escape", `{"to":"bob","id":"m1","envelope":"\u00e"}`, false},
		{"trailing comma", `{"to":"bob","id":"m1","envelope":[1,]}`, false},
		{"trailing data", `{"to":"bob","id":"m1","envelope":{}}x`, false},
		{"unterminated", `{"to":"bob","id":"m1","envelope":{"a":1}`, false},
		{"control byte in a string", "{\"to\":\"bob\",\"id\":\"m1\",\"envelope\":\"a\tb\"}", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, ok := scanSend([]byte(tt.body))
			if ok != tt.take {
				t.Fatalf("scanSend took it: %v, want %v", ok, tt.take)
			}
			if !ok {
				return
			}
			strict, err := decodeSend([]byte(tt.body))
			if err != nil || r.To != strict.To || r.ID != strict.ID || string(r.Envelope) != string(strict.Envelope) {
				t.Fatalf("scanSend = %+v; the strict decoder: %+v, %v", r, strict, err)
			}
		})
	}
}
