package httpapi

import (
	"errors"
	"net"

	"github.com/kez-chat/kezd/faultlog"
)

// AcceptLogger wraps ln so that its accept errors are logged at warn level
// (the first of a run at once, then a summary every interval): net/http
// retries them quietly, and running out of descriptors (EMFILE) is an
// outage the operator must see. Serve the returned listener.
func (s *Server) AcceptLogger(ln net.Listener) net.Listener {
	return &acceptLogger{Listener: ln, faults: faultlog.New(s.log, 0)}
}

type acceptLogger struct {
	net.Listener
	faults *faultlog.Log
}

func (l *acceptLogger) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		if !isClosed(err) {
			l.faults.Fail("http accept", err)
		}
		return nil, err
	}
	l.faults.OK("http accept")
	return c, nil
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed)
}
