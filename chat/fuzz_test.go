package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// FuzzParseSend checks the strict body parser's promises on hostile input:
// it never panics, every refusal is a client error, and what it accepts has
// exactly the members it knows, once each, an envelope that is compact JSON
// within the size and depth limits, and means to encoding/json what it means
// to kezd.
func FuzzParseSend(f *testing.F) {
	for _, s := range []string{
		`{"to":"bob","id":"m1","envelope":{"a":[1,2,{"b":null}]}}`,
		`{"to":"bob","TO":"carol","id":"m1","envelope":{}}`,
		`{"to":"bob","to":"carol","id":"m1","envelope":{}}`,
		`{"to":"bob","id":"m1","envelope":[[[[[[[[]]]]]]]]}`,
		`{"to":"bob","id":"m1","envelope":"[\"{"}`,
		`{"to":"bob","id":"m1","envelope":1} x`,
		`{"to":"b\u006fb","id":"m1","envelope":01}`,
		`{"to":null,"id":"m1","envelope":{}}`,
		` {"envelope" : { "k" : "v" } , "id":"x","to":"a"} `,
		` {"envelope":{"k":"v","n":[-0.5e+3,true,false,null,"\u00e9\n"]} , "id":"x","to":"a"} `,
		`{"to":"bob","id":"m1","envelope":{"a":1,}}`,
		`{"to":"bob","id":"m1","envelope":[1 ,2]}`,
		`{"to":"bob","id":"m1","envelope":"\ud800"}`,
		`{"to":"bob","id":"m1","envelope":-}`,
		`{"to":"bob","id":"m1","envelope":1.}`,
		`{"to":"bob","id":"m1","envelope":{"a":tru}}`,
		`[]`, `{`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if fast, ok := scanSend(body); ok {
			// The one-pass reader takes only what the strict decoder
			// reads the same way, depth check included.
			strict, err := decodeSend(body)
			if err != nil || fast.To != strict.To || fast.ID != strict.ID || !bytes.Equal(fast.Envelope, strict.Envelope) {
				t.Fatalf("scanSend(%q) = %+v; decodeSend = %+v, %v", body, fast, strict, err)
			}
			if (checkSend(fast, true) == nil) != (checkSend(strict, false) == nil) {
				t.Fatalf("scanSend(%q): checkSend says %v with the scan, %v without", body, checkSend(fast, true), checkSend(strict, false))
			}
		}
		r, err := ParseSend(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Code != protocol.CodeInvalidRequest && e.Code != protocol.CodeInvalidHandle && e.Code != protocol.CodeTooLarge) {
				t.Fatalf("ParseSend(%q) = %v: not a client error", body, err)
			}
			return
		}
		names := topLevelNames(t, body)
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] || (n != "to" && n != "id" && n != "envelope") {
				t.Fatalf("accepted %q with members %q", body, names)
			}
			seen[n] = true
		}
		if identity.ValidateHandle(r.To) != nil || identity.ValidateClientID(r.ID) != nil {
			t.Fatalf("accepted %q as %+v", body, r)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, r.Envelope); err != nil || !bytes.Equal(compact.Bytes(), r.Envelope) {
			t.Fatalf("envelope %q is not compact JSON: %v", r.Envelope, err)
		}
		if len(r.Envelope) > protocol.MaxEnvelope || valueDepth(t, r.Envelope) > protocol.MaxEnvelopeDepth {
			t.Fatalf("accepted an envelope over the limits: %q", r.Envelope)
		}
		var std protocol.SendRequest
		if err := json.Unmarshal(body, &std); err != nil || std.To != r.To || std.ID != r.ID {
			t.Fatalf("encoding/json reads %q as %+v, %v; kezd as %+v", body, std, err, r)
		}
	})
}

// FuzzParseRegister: the same promises for registration bodies.
func FuzzParseRegister(f *testing.F) {
	for _, s := range []string{
		`{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1,"sig":"x"}`,
		`{"handle":"alice","Handle":"bob","signing_key":"s","encryption_key":"e","ts":1,"sig":"x"}`,
		`{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1,"ts":2,"sig":"x"}`,
		`{"handle":"alice","signing_key":"s","encryption_key":"e","ts":1e3,"sig":"x"}`,
		`{"handle":"alice","signing_key":"s","encryption_key":"e","ts":-0,"sig":"x"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := ParseRegister(body)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || e.Code != protocol.CodeInvalidRequest {
				t.Fatalf("ParseRegister(%q) = %v: not invalid_request", body, err)
			}
			return
		}
		names := topLevelNames(t, body)
		want := map[string]bool{"handle": true, "signing_key": true, "encryption_key": true, "ts": true, "sig": true}
		for _, n := range names {
			if !want[n] {
				t.Fatalf("accepted %q with members %q", body, names)
			}
			delete(want, n)
		}
		if len(want) != 0 {
			t.Fatalf("accepted %q without %v", body, want)
		}
		var std protocol.RegisterRequest
		if err := json.Unmarshal(body, &std); err != nil || std != r {
			t.Fatalf("encoding/json reads %q as %+v, %v; kezd as %+v", body, std, err, r)
		}
	})
}

// topLevelNames lists the member names of the JSON object body in order,
// read by encoding/json's tokenizer rather than by DecodeObject.
func topLevelNames(t *testing.T, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if _, err := dec.Token(); err != nil {
		t.Fatalf("accepted %q: %v", body, err)
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("accepted %q: %v", body, err)
		}
		names = append(names, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("accepted %q: %v", body, err)
		}
	}
	return names
}

// valueDepth is the nesting depth of the JSON value v, computed from the
// decoded value rather than by jsonDepth's byte scan.
func valueDepth(t *testing.T, v []byte) int {
	t.Helper()
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		t.Fatalf("envelope %q: %v", v, err)
	}
	var depth func(any) int
	depth = func(x any) int {
		d := 0
		switch x := x.(type) {
		case []any:
			for _, e := range x {
				d = max(d, depth(e))
			}
			return d + 1
		case map[string]any:
			for _, e := range x {
				d = max(d, depth(e))
			}
			return d + 1
		}
		return 0
	}
	return depth(x)
}
