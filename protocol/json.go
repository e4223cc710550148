package protocol

import (
	"bytes"
	"encoding/json"
)

// Marshal encodes v as kezd answers on every transport: never HTML-escaped,
// so that an envelope's <, > and & come back exactly as sent, and without
// the newline json.Encoder adds.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
