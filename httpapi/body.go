package httpapi

import (
	"errors"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

// readBody reads the request body, refusing more than limit bytes before
// reading them: a declared length over the limit is refused at once, and an
// undeclared one is cut off at limit+1 bytes (the server then closes the
// connection rather than drain the rest).
func readBody(c echo.Context, limit int64) ([]byte, error) {
	req := c.Request()
	if req.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	// The net/http writer itself, so that on overflow it knows to close the
	// connection rather than drain the rest.
	r := http.MaxBytesReader(c.Response().Writer, req.Body, limit)
	var body []byte
	var err error
	if n := req.ContentLength; n > 0 {
		// Declared (and within limit): read exactly that, in one
		// allocation; net/http ends the body there.
		body = make([]byte, n)
		_, err = io.ReadFull(r, body)
	} else {
		body, err = io.ReadAll(r)
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return nil, tooLarge(limit)
	}
	if err != nil {
		return nil, chat.Errorf(protocol.CodeInvalidRequest, "could not read the request body")
	}
	return body, nil
}

func tooLarge(limit int64) error {
	return chat.Errorf(protocol.CodeTooLarge, "request body is larger than %d bytes", limit)
}
