package protocol

// ScanCompactJSON reads one compact JSON value at b[i:] (RFC 8259's grammar
// with no whitespace outside strings; arrays and objects nested at most
// maxDepth deep, a scalar being depth 0) and returns the index after it. It
// reports false for anything else, valid JSON with whitespace or deeper
// nesting included: it is a fast path, and its callers fall back to
// encoding/json for the verdict. What it accepts, json.Valid accepts
// (FuzzScanCompactJSON). Bytes of 0x80 and above in strings are passed
// over, as json.Valid does.
func ScanCompactJSON(b []byte, i, maxDepth int) (end int, ok bool) {
	return compactScan{b: b, maxDepth: maxDepth}.value(i, 1)
}

// maxScanDepth bounds CheckEncoded's quick check: a stored message is one
// object around its envelope.
const maxScanDepth = MaxEnvelopeDepth + 1

// compactScan reads compact JSON: RFC 8259's grammar without whitespace
// outside strings, arrays and objects nested at most maxDepth deep. Bytes
// of 0x80 and above in strings are passed over, as encoding/json does;
// whoever needs UTF-8 checks it.
type compactScan struct {
	b        []byte
	maxDepth int
}

// value reads the value at i, itself at depth (an array or object there is
// nesting level depth), and returns the index after it.
func (s compactScan) value(i, depth int) (int, bool) {
	b := s.b
	if i >= len(b) {
		return 0, false
	}
	switch c := b[i]; {
	case c == '"':
		return s.str(i)
	case c == '{':
		if depth > s.maxDepth {
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
		if depth > s.maxDepth {
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

func (s compactScan) literal(i int, lit string) (int, bool) {
	if len(s.b)-i < len(lit) || string(s.b[i:i+len(lit)]) != lit {
		return 0, false
	}
	return i + len(lit), true
}

// str reads a string at i (its opening quote) with its escapes.
func (s compactScan) str(i int) (int, bool) {
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
func (s compactScan) number(i int) (int, bool) {
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
