package httpapi

import (
	"bytes"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
)

// Metric is one number GET /metrics reports, in the Prometheus text
// format: a counter (only grows) or a gauge.
type Metric struct {
	Name    string // e.g. kezd_publish_failures_total
	Help    string
	Counter bool
	Value   func() float64
}

// metrics serves GET /metrics: the configured metrics and this server's
// open streams, in the Prometheus text exposition format.
func (s *Server) metrics(c echo.Context) error {
	all := append([]Metric{{
		Name:  "kezd_streams_open",
		Help:  "Open SSE streams on this instance.",
		Value: func() float64 { return float64(s.openStreamsTotal()) },
	}}, s.cfg.Metrics...)
	var b bytes.Buffer
	for _, m := range all {
		kind := "gauge"
		if m.Counter {
			kind = "counter"
		}
		b.WriteString("# HELP " + m.Name + " " + m.Help + "\n")
		b.WriteString("# TYPE " + m.Name + " " + kind + "\n")
		b.WriteString(m.Name + " " + strconv.FormatFloat(m.Value(), 'g', -1, 64) + "\n")
	}
	return c.Blob(http.StatusOK, "text/plain; version=0.0.4; charset=utf-8", b.Bytes())
}

func (s *Server) openStreamsTotal() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams.open
}
