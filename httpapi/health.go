package httpapi

import (
	"context"
	"net/http"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/protocol"
)

type healthResponse struct {
	Status string            `json:"status"`
	Checks map[string]string `json:"checks,omitempty"`
}

// healthz serves GET /healthz: the process is up and serving HTTP.
func (s *Server) healthz(c echo.Context) error {
	return writeJSON(c, http.StatusOK, healthResponse{Status: "ok"})
}

// readyz serves GET /readyz: every configured check (the store, the broker)
// answers within ReadyTimeout. When one does not, the answer is 503
// unavailable naming the failed checks; their errors go to the log only.
func (s *Server) readyz(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.ReadyTimeout)
	defer cancel()

	errs := make([]error, len(s.cfg.Ready))
	var wg sync.WaitGroup
	for i, ch := range s.cfg.Ready {
		wg.Go(func() { errs[i] = ch.Fn(ctx) })
	}
	wg.Wait()

	checks := make(map[string]string, len(s.cfg.Ready))
	var failed []string
	for i, ch := range s.cfg.Ready {
		if errs[i] != nil {
			s.log.Warn("readiness check failed", "check", ch.Name, "err", errs[i])
			failed = append(failed, ch.Name)
			checks[ch.Name] = "failed"
			continue
		}
		checks[ch.Name] = "ok"
	}
	if len(failed) > 0 {
		return chat.Errorf(protocol.CodeUnavailable, "not ready: %s failed", strings.Join(failed, ", "))
	}
	return writeJSON(c, http.StatusOK, healthResponse{Status: "ok", Checks: checks})
}
