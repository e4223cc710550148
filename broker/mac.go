package broker

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
)

// Live publishes carry a MAC (protocol.MACHeader) under a key every instance
// of the deployment derives alike from its shared NATS keys, and the live
// path drops what lacks a valid one: with an external NATS whose
// permissions are looser than the callout's, someone else may manage to
// publish on an inbox subject, and what a stream shows, or counts as already
// seen, must be what kezd published. The MAC covers the subject, the seq
// header and the data.

// macOf returns the MAC of a live publish, base64url without padding.
func macOf(key []byte, subject string, seq int64, data []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(subject))
	m.Write([]byte{0})
	m.Write(strconv.AppendInt(nil, seq, 10))
	m.Write([]byte{0})
	m.Write(data)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// errBadMAC is the reason a live message not published by kezd is dropped.
var errBadMAC = errors.New("no valid MAC: not published by this deployment's kezd")

// checkMAC verifies the MAC header value got.
func checkMAC(key []byte, subject string, seq int64, data []byte, got string) error {
	if got == "" || !hmac.Equal([]byte(got), []byte(macOf(key, subject, seq, data))) {
		return errBadMAC
	}
	return nil
}
