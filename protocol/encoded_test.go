package protocol_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/kez-chat/kezd/protocol"
)

func TestAppendMessage(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 20, 1, 2, 345678900, time.UTC)
	for _, m := range []protocol.Message{
		{Seq: 1, From: "alice", To: "bob", ID: "m-1", Envelope: json.RawMessage(`{"v":1,"ct":"abc"}`), SentAt: at},
		{Seq: 1 << 60, From: "a.b_c-d", To: "x", ID: "0123456789abcdef", Envelope: json.RawMessage(`["<&>","é"]`), SentAt: at.In(time.FixedZone("x", 5400))},
		{Seq: 7, From: `q"uote`, To: `back\slash`, ID: "ctl\n\x01 é <&>", Envelope: json.RawMessage(`"s"`), SentAt: time.Time{}},
		{Seq: 8, From: "a", To: "b", ID: "c", Envelope: nil, SentAt: at.Truncate(time.Second)},
		{Seq: 9, From: "a", To: "b", ID: "c", Envelope: json.RawMessage(`1`), SentAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)},
	} {
		got := protocol.AppendMessage([]byte("prefix"), m)
		want, err := protocol.Marshal(m)
		if err != nil { // a year Marshal refuses: still one valid JSON object
			if !json.Valid(got[len("prefix"):]) {
				t.Errorf("AppendMessage(%+v) = %s, not JSON", m, got)
			}
			continue
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("AppendMessage(%+v)\n got %s\nwant prefix%s", m, got, want)
		}
		if e := protocol.Encode(m); e.Seq != m.Seq || !bytes.Equal(e.JSON, want) {
			t.Errorf("Encode(%+v) = %d %s", m, e.Seq, e.JSON)
		}
	}
}

func TestCheckEncoded(t *testing.T) {
	t.Parallel()
	good := protocol.AppendMessage(nil, protocol.Message{Seq: 42, From: "alice", To: "bob", ID: "m1", Envelope: json.RawMessage(`{"v":1}`), SentAt: time.Now()})
	for _, c := range []struct {
		name   string
		handle string
		seq    int64
		data   []byte
		ok     bool
	}{
		{"kezd's own", "bob", 42, good, true},
		{"another seq", "bob", 41, good, false},
		{"seq is a prefix", "bob", 4, good, false},
		{"another recipient", "bo", 42, good, false},
		{"zero seq", "bob", 0, []byte(`{"seq":0,"from":"a","to":"bob","id":"x"}`), false},
		{"fields in another order", "bob", 42, []byte(`{"from":"alice","seq":42,"to":"bob","id":"m1"}`), false},
		{"truncated", "bob", 42, good[:len(good)-1], false},
		{"two lines", "bob", 42, bytes.Replace(good, []byte(`{"v":1}`), []byte("{\n}"), 1), false}, // valid JSON, but not one SSE data line
		{"garbage after", "bob", 42, append(append([]byte{}, good...), " x"...), false},
		{"not JSON", "bob", 42, []byte(strings.Repeat("x", 10)), false},
	} {
		err := protocol.CheckEncoded(c.handle, c.seq, c.data)
		if (err == nil) != c.ok {
			t.Errorf("%s: CheckEncoded = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

func TestAppendSendResult(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 1, 20, 1, 2, 345678900, time.UTC)
	for _, r := range []protocol.SendResult{
		{Seq: 1, To: "bob", ID: "m-1", SentAt: at},
		{Seq: 1 << 60, To: "a.b_c-d", ID: "0123456789abcdef", SentAt: at.In(time.FixedZone("x", 5400)), Duplicate: true},
		{Seq: 7, To: `back\slash`, ID: "ctl\n\x01 é <&>", SentAt: time.Time{}},
	} {
		got := protocol.AppendSendResult([]byte("prefix"), r)
		want, err := protocol.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, append([]byte("prefix"), want...)) {
			t.Errorf("AppendSendResult(%+v)\n got %s\nwant prefix%s", r, got, want)
		}
	}
}

func TestScanCompactJSON(t *testing.T) {
	t.Parallel()
	deep := func(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
	for _, c := range []struct {
		v  string
		ok bool
	}{
		{`{"a":[1,-2.5e+3,0,true,false,null,"\u00e9\"\\\/\b\f\n\r\t"],"b":{}}`, true},
		{`"é"`, true}, {`0`, true}, {`-0.0E-1`, true}, {`[]`, true}, {deep(4), true},
		{deep(5), false},                       // past maxDepth
		{`{"a": 1}`, false}, {`[1 ,2]`, false}, // valid, but not compact
		{`01`, false}, {`1.`, false}, {`-`, false}, {`.5`, false}, {`1e`, false},
		{`[1,]`, false}, {`{"a":1,}`, false}, {`{"a"}`, false}, {`{1:2}`, false},
		{`"\x"`, false}, {`"\u00e"`, false}, {"\"a\tb\"", false}, {`"open`, false},
		{`tru`, false}, {`nul`, false}, {``, false},
	} {
		end, ok := protocol.ScanCompactJSON([]byte(c.v), 0, 4)
		if whole := ok && end == len(c.v); whole != c.ok {
			t.Errorf("ScanCompactJSON(%s) = %d, %v; want the whole of it taken: %v", c.v, end, ok, c.ok)
		}
	}
	// It stops after the value: what follows is the caller's.
	if end, ok := protocol.ScanCompactJSON([]byte(`{"a":1},"b"`), 0, 4); !ok || end != 7 {
		t.Errorf("ScanCompactJSON before more input = %d, %v", end, ok)
	}
}

// FuzzScanCompactJSON: what the fast path accepts, encoding/json does, and
// CheckEncoded's verdict is json.Valid's whichever path gives it.
func FuzzScanCompactJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}]}`, `[1 ,2]`, `"\ud800"`, `-0.5e+3`, `01`, `{"a":"\u00e9"}`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if end, ok := protocol.ScanCompactJSON(b, 0, protocol.MaxEnvelopeDepth); ok && !json.Valid(b[:end]) {
			t.Fatalf("ScanCompactJSON took %q, which is not JSON", b[:end])
		}
		data := append([]byte(`{"seq":1,"from":"a","to":"b","envelope":`), b...)
		data = append(data, '}')
		err := protocol.CheckEncoded("b", 1, data)
		if valid := json.Valid(data) && !bytes.ContainsAny(data, "\r\n"); (err == nil) != valid {
			t.Fatalf("CheckEncoded(%q) = %v; json.Valid says %v", data, err, valid)
		}
	})
}
