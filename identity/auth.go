package identity

import (
	"fmt"
	"strconv"
	"strings"
)

// Credentials are the parsed parts of a signed request: who signed, when, and
// the raw signature bytes. Parsing checks syntax only; Verify and CheckSkew
// decide whether to believe them.
type Credentials struct {
	Handle string
	TS     int64
	Sig    []byte
}

// maxTSDigits bounds the timestamp field so hostile input cannot make the
// parser do more than trivial work.
const maxTSDigits = 19

// ParseAuthorization parses an `Authorization: Kez <handle>:<ts>:<sig>` header
// value. The scheme name is matched case-insensitively, as RFC 9110 says.
func ParseAuthorization(header string) (Credentials, error) {
	scheme, rest, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Kez") {
		return Credentials{}, fmt.Errorf("%w: want \"Kez <handle>:<ts>:<sig>\"", ErrMalformed)
	}
	rest = strings.TrimLeft(rest, " ")
	handle, tsSig, ok := strings.Cut(rest, ":")
	if !ok {
		return Credentials{}, fmt.Errorf("%w: want \"Kez <handle>:<ts>:<sig>\"", ErrMalformed)
	}
	if err := ValidateHandle(handle); err != nil {
		return Credentials{}, fmt.Errorf("%w: signer: %v", ErrMalformed, err)
	}
	ts, sig, err := parseTSSig(tsSig)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Handle: handle, TS: ts, Sig: sig}, nil
}

// ParseStreamAuth parses the `auth=<ts>:<sig>` query value of the stream
// endpoint (already URL-decoded). The signer is the handle in the path.
func ParseStreamAuth(handle, value string) (Credentials, error) {
	ts, sig, err := parseTSSig(value)
	if err != nil {
		return Credentials{}, err
	}
	return Credentials{Handle: handle, TS: ts, Sig: sig}, nil
}

func parseTSSig(s string) (int64, []byte, error) {
	tsStr, sigStr, ok := strings.Cut(s, ":")
	if !ok {
		return 0, nil, fmt.Errorf("%w: want \"<ts>:<sig>\"", ErrMalformed)
	}
	ts, err := ParseTimestamp(tsStr)
	if err != nil {
		return 0, nil, err
	}
	sig, err := ParseSignature(sigStr)
	if err != nil {
		return 0, nil, err
	}
	return ts, sig, nil
}

// ParseTimestamp parses a decimal Unix-seconds timestamp: digits only, no
// sign, and no leading zero, so that a signed timestamp has one spelling.
func ParseTimestamp(s string) (int64, error) {
	if s == "" || len(s) > maxTSDigits {
		return 0, fmt.Errorf("%w: timestamp must be 1 to %d decimal digits", ErrMalformed, maxTSDigits)
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("%w: timestamp must not have a leading zero", ErrMalformed)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%w: timestamp must be decimal digits", ErrMalformed)
		}
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: timestamp: %v", ErrMalformed, err)
	}
	return ts, nil
}
