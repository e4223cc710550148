package chat

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"

	"github.com/kez-chat/kezd/protocol"
)

// Member is one member of a JSON request body for DecodeObject: its exact
// name, where its value goes (a pointer; a *json.RawMessage keeps the text),
// and whether the body must have it.
type Member struct {
	Name     string
	Dst      any
	Required bool
}

// DecodeObject parses body strictly as a JSON object with the given members:
// names match exactly (no case folding), each at most once, nothing else,
// and nothing after the object. encoding/json alone would match "TO" to "to"
// and keep the last of two "to"s, so that one signed body could mean
// different things to kezd and to whatever else reads it. A null value
// counts as absent. Every failure is invalid_request with a message naming
// the member at fault. New endpoints parse their bodies with it.
func DecodeObject(body []byte, members ...Member) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil {
		return syntaxError(err)
	} else if d, ok := tok.(json.Delim); !ok || d != '{' {
		return Errorf(protocol.CodeInvalidRequest, "body must be a JSON object")
	}
	seen := make([]bool, len(members))
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		name, _ := tok.(string) // object keys are always strings
		i := memberIndex(members, name)
		if i < 0 {
			return Errorf(protocol.CodeInvalidRequest, "unknown member %q (member names are case-sensitive)", name)
		}
		if seen[i] {
			return Errorf(protocol.CodeInvalidRequest, "member %q appears more than once", name)
		}
		seen[i] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return syntaxError(err)
		}
		if bytes.Equal(raw, []byte("null")) {
			seen[i] = false
			continue
		}
		if dst, ok := members[i].Dst.(*json.RawMessage); ok {
			*dst = raw // Decode has checked it and made it a copy of its own
			continue
		}
		if err := json.Unmarshal(raw, members[i].Dst); err != nil {
			return Errorf(protocol.CodeInvalidRequest, "field %s must be a JSON %s", name, jsonKind(reflect.TypeOf(members[i].Dst).Elem()))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return syntaxError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Errorf(protocol.CodeInvalidRequest, "body has data after its JSON object")
	}
	for i, m := range members {
		if m.Required && !seen[i] {
			return Errorf(protocol.CodeInvalidRequest, "%s is required", m.Name)
		}
	}
	return nil
}

func memberIndex(members []Member, name string) int {
	for i, m := range members {
		if m.Name == name {
			return i
		}
	}
	return -1
}

func syntaxError(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return Errorf(protocol.CodeInvalidRequest, "body is not valid JSON (at byte %d)", se.Offset)
	}
	return Errorf(protocol.CodeInvalidRequest, "body is not valid JSON")
}

// jsonKind names a Go type the way a JSON client thinks of it.
func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return "number"
	default:
		return "value of the expected type"
	}
}

// jsonDepth returns how deeply v, valid JSON text, nests arrays and
// objects (a scalar is 0, [] is 1), stopping early once it passes limit.
func jsonDepth(v []byte, limit int) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inString {
			switch c {
			case '\\':
				i++ // the escaped byte cannot end the string
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '[', '{':
			if depth++; depth > deepest {
				if deepest = depth; deepest > limit {
					return deepest
				}
			}
		case ']', '}':
			depth--
		}
	}
	return deepest
}
