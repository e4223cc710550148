package chat

import (
	"github.com/kez-chat/kezd/protocol"
)

// scanSend is ParseSend's fast path: one pass over a send body of the
// common shape, a JSON object with exactly "to", "id" and "envelope", once
// each (in any order, whitespace allowed between them), "to" and "id"
// plain ASCII strings without escapes, and an envelope that is already
// compact JSON (no whitespace outside its strings) nested at most
// protocol.MaxEnvelopeDepth deep. It checks the envelope's JSON grammar as
// it goes and returns the members, the envelope as a slice of body (its
// capacity cut at its end, so that appending to it copies).
//
// Any other body, valid or not, makes it return ok false and nothing else:
// the strict decoder (decodeSend) then reads it and gives the precise
// error. So what it accepts is exactly what decodeSend would return for
// that body (FuzzParseSend checks it), and it never refuses anything.
func scanSend(body []byte) (r protocol.SendRequest, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return r, false
	}
	var seen [3]bool
	for i++; ; {
		i = skipSpace(body, i)
		start := i
		end, ok := plainString(body, i)
		if !ok {
			return r, false
		}
		var k int
		switch string(body[start+1 : end-1]) {
		case "to":
			k = 0
		case "id":
			k = 1
		case "envelope":
			k = 2
		default:
			return r, false
		}
		if seen[k] {
			return r, false
		}
		seen[k] = true
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return r, false
		}
		i = skipSpace(body, i+1)
		start = i
		if k < 2 {
			if end, ok = plainString(body, i); !ok {
				return r, false
			}
			if s := string(body[start+1 : end-1]); k == 0 {
				r.To = s
			} else {
				r.ID = s
			}
		} else {
			if end, ok = protocol.ScanCompactJSON(body, i, protocol.MaxEnvelopeDepth); !ok {
				return r, false
			}
			r.Envelope = body[start:end:end]
		}
		i = skipSpace(body, end)
		if i >= len(body) {
			return r, false
		}
		if body[i] == ',' {
			i++
			continue
		}
		if body[i] != '}' {
			return r, false
		}
		break
	}
	if skipSpace(body, i+1) != len(body) || !seen[0] || !seen[1] || !seen[2] {
		return protocol.SendRequest{}, false
	}
	return r, true
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// plainString reads a JSON string at i made of printable ASCII without
// escapes, and returns the index after its closing quote.
func plainString(b []byte, i int) (end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return 0, false
	}
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return 0, false
		}
	}
	return 0, false
}
