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
// it goes and returns the members, the envelope as a copy of its bytes.
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
			v := envelopeScan{b: body}
			if end, ok = v.value(i, 1); !ok {
				return r, false
			}
			r.Envelope = append([]byte(nil), body[start:end]...)
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

// envelopeScan checks one compact JSON value (RFC 8259 grammar, no
// whitespace outside strings) and its nesting depth. Bytes of 0x80 and
// above in strings are passed over here; ParseSend checks the envelope is
// UTF-8.
type envelopeScan struct{ b []byte }

// value reads the value at i, itself at depth (1 for the envelope; an
// array or object there is nesting level depth), and returns the index
// after it.
func (s envelopeScan) value(i, depth int) (int, bool) {
	b := s.b
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return s.str(i)
	case c == '{':
		if depth > protocol.MaxEnvelopeDepth {
			return 0, false
		}
		i++
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			var ok bool
			if i >= len(b) || b[i] != '"' {
				return 0, false
			}
			if i, ok = s.str(i); !ok || i >= len(b) || b[i] != ':' {
				return 0, false
			}
			if i, ok = s.value(i+1, depth+1); !ok || i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case ',':
				i++
			case '}':
				return i + 1, true
			default:
				return 0, false
			}
		}
	case c == '[':
		if depth > protocol.MaxEnvelopeDepth {
			return 0, false
		}
		i++
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = s.value(i, depth+1); !ok || i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case ',':
				i++
			case ']':
				return i + 1, true
			default:
				return 0, false
			}
		}
	case c == 't':
		return s.literal(i, "true")
	case c == 'f':
		return s.literal(i, "false")
	case c == 'n':
		return s.literal(i, "null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number(i)
	}
	return 0, false
}

func (s envelopeScan) literal(i int, lit string) (int, bool) {
	if len(s.b)-i < len(lit) || string(s.b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// str reads a string at i (its opening quote) with its escapes.
func (s envelopeScan) str(i int) (int, bool) {
	b := s.b
	for i++; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return i + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			i++
			if i >= len(b) {
				return 0, false
			}
			switch b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if len(b)-i <= 4 {
					return 0, false
				}
				for _, h := range b[i+1 : i+5] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return 0, false
					}
				}
				i += 4
			default:
				return 0, false
			}
		}
	}
	return 0, false
}

// number reads -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at i.
func (s envelopeScan) number(i int) (int, bool) {
	b := s.b
	digits := func(i int) (int, bool) {
		j := i
		for j < len(b) && b[j] >= '0' && b[j] <= '9' {
			j++
		}
		return j, j > i
	}
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return 0, false
	}
	var ok bool
	if b[i] == '0' {
		i++
	} else if i, ok = digits(i); !ok {
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		if i, ok = digits(i + 1); !ok {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i, ok = digits(i); !ok {
			return 0, false
		}
	}
	return i, true
}
