package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Encoded is a stored message as it goes on the wire: its seq and its JSON
// (PROTOCOL.md's stored message, as Marshal writes it). A message is encoded
// once, when it is published or read from the store; every stream it
// reaches writes those bytes as they are.
type Encoded struct {
	Seq  int64
	JSON []byte
}

// Encode returns m as an Encoded message.
func Encode(m Message) Encoded {
	return Encoded{Seq: m.Seq, JSON: AppendMessage(nil, m)}
}

// AppendMessage appends m's JSON to b: byte for byte what Marshal(m) writes
// (TestAppendMessage holds it to that), without reflection and in one
// allocation. The envelope is appended as it is: a stored message's envelope
// is compact JSON text (kezd's send path made it so before it was stored).
func AppendMessage(b []byte, m Message) []byte {
	b = slicesGrow(b, len(m.Envelope)+len(m.From)+len(m.To)+len(m.ID)+96)
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, m.Seq, 10)
	b = append(b, `,"from":`...)
	b = appendString(b, m.From)
	b = append(b, `,"to":`...)
	b = appendString(b, m.To)
	b = append(b, `,"id":`...)
	b = appendString(b, m.ID)
	b = append(b, `,"envelope":`...)
	if len(m.Envelope) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, m.Envelope...)
	}
	b = append(b, `,"sent_at":`...)
	b = appendTime(b, m.SentAt)
	return append(b, '}')
}

func slicesGrow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n)
		copy(nb, b)
		b = nb
	}
	return b
}

// appendString appends s as a JSON string the way Marshal does: as it is
// when it needs no escaping (every handle and client id), else through
// Marshal.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			q, _ := Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendTime appends t as time.Time's MarshalJSON does: RFC 3339 with
// nanoseconds, in quotes. (MarshalJSON refuses years past 9999, which no
// store writes; here they are still a JSON string.)
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// CheckEncoded checks that data is a stored message for handle with the
// given seq as kezd publishes it (AppendMessage's layout: seq, from, to
// first), and valid JSON, without decoding it: a stream can then write it
// out as it is. Anything else (another publisher, another version) is an
// error.
func CheckEncoded(handle string, seq int64, data []byte) error {
	if seq <= 0 {
		return fmt.Errorf("seq %d", seq)
	}
	rest, ok := bytes.CutPrefix(data, strconv.AppendInt([]byte(`{"seq":`), seq, 10))
	if !ok {
		return fmt.Errorf("not a stored message with seq %d", seq)
	}
	if rest, ok = bytes.CutPrefix(rest, []byte(`,"from":"`)); !ok {
		return errors.New("no from after seq")
	}
	i := bytes.IndexByte(rest, '"')
	if i < 0 {
		return errors.New("unterminated from")
	}
	rest = rest[i+1:]
	if !bytes.HasPrefix(rest, []byte(`,"to":"`+handle+`",`)) {
		return fmt.Errorf("not for %s", handle)
	}
	if end, ok := ScanCompactJSON(data, 0, maxScanDepth); ok && end == len(data) {
		// kezd's own messages are compact JSON, which is also one line:
		// the quick check says so, and the slow ones are not needed.
		return nil
	}
	if bytes.ContainsAny(data, "\r\n") {
		return errors.New("not on one line") // a stream writes it as one data: line
	}
	if !json.Valid(data) {
		return errors.New("not valid JSON")
	}
	return nil
}

// AppendSendResult appends r's JSON to b: byte for byte what Marshal(r)
// writes (TestAppendSendResult), without reflection. It is the answer to
// every send.
func AppendSendResult(b []byte, r SendResult) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendInt(b, r.Seq, 10)
	b = append(b, `,"to":`...)
	b = appendString(b, r.To)
	b = append(b, `,"id":`...)
	b = appendString(b, r.ID)
	b = append(b, `,"sent_at":`...)
	b = appendTime(b, r.SentAt)
	if r.Duplicate {
		b = append(b, `,"duplicate":true`...)
	}
	return append(b, '}')
}
