package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
	"github.com/kez-chat/kezd/store"
)

// poll serves GET /v1/inbox/:handle?since=&limit=&wait=: the owner's
// messages after since, waiting up to wait seconds (at most 30) for one to
// arrive when there are none. The signature covers since, whether or not
// the request waits.
func (s *Server) poll(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	since, err := queryInt(q.Get("since"), "since", 0)
	if err != nil {
		return err
	}
	limit, err := queryInt(q.Get("limit"), "limit", protocol.DefaultPollLimit)
	if err != nil {
		return err
	}
	if limit < 1 {
		return chat.Errorf(protocol.CodeInvalidRequest, "limit must be at least 1")
	}
	limit = min(limit, protocol.MaxPollLimit)
	waitSec, err := queryInt(q.Get("wait"), "wait", 0)
	if err != nil {
		return err
	}
	wait := time.Duration(min(waitSec, int64(protocol.MaxPollWait/time.Second))) * time.Second

	creds, err := headerCredentials(c.Request())
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	owner, err := s.authorizeOwner(c, creds, identity.PollString(handle, since, creds.TS), handle)
	if err != nil {
		return err
	}

	if wait > 0 {
		release, err := s.tryAcquire(c.Request().Context(), s.polls, handle, clientIP(c))
		if err != nil {
			return err
		}
		defer release()
		// A waiting request outlives the server's read deadline, whose
		// expiry would cancel the request's context, and needs its write
		// deadline moved past the wait.
		rc := http.NewResponseController(c.Response())
		_ = rc.SetReadDeadline(time.Time{})
		_ = rc.SetWriteDeadline(time.Now().Add(wait + s.cfg.WriteTimeout))
	}
	ms, err := s.pollUntilClosing(ctx, owner, since, int(limit), wait)
	if err != nil {
		return err
	}
	next := since
	if len(ms) > 0 {
		next = ms[len(ms)-1].Seq
	}
	res := protocol.Page{Messages: ms, Next: next}
	if ms == nil {
		res.Messages = []store.Message{}
	}
	// Seqs have no gaps but where messages were deleted.
	if len(ms) > 0 && ms[0].Seq > since+1 {
		res.Reset = &protocol.Reset{Oldest: ms[0].Seq}
	}
	return writeJSON(c, http.StatusOK, res)
}

// pollUntilClosing polls, cutting a wait short when the server starts
// shutting down: the client then gets what is there now, as at a timeout.
func (s *Server) pollUntilClosing(ctx context.Context, owner store.Handle, since int64, limit int, wait time.Duration) ([]store.Message, error) {
	if wait <= 0 {
		return s.svc.Poll(ctx, owner, since, limit, 0)
	}
	waitCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.closing, cancel)
	defer stop()
	ms, err := s.svc.Poll(waitCtx, owner, since, limit, wait)
	if err != nil && ctx.Err() == nil && s.closing.Err() != nil {
		return s.svc.Poll(ctx, owner, since, limit, 0)
	}
	return ms, err
}

// queryInt parses an optional non-negative decimal query value; absent
// means def, anything else that is not digits, or has a leading zero (a
// signed since has one spelling), is 400 invalid_request.
func queryInt(v, name string, def int64) (int64, error) {
	if v == "" {
		return def, nil
	}
	if len(v) > 1 && v[0] == '0' {
		return 0, chat.Errorf(protocol.CodeInvalidRequest, "%s must be a non-negative integer without leading zeros", name)
	}
	n, err := strconv.ParseUint(v, 10, 63) // digits only: no sign, no spaces
	if err != nil {
		return 0, chat.Errorf(protocol.CodeInvalidRequest, "%s must be a non-negative integer", name)
	}
	return int64(n), nil
}

// deleteThrough serves DELETE /v1/inbox/:handle?through=<n>, signed by the
// owner over through.
func (s *Server) deleteThrough(c echo.Context) error {
	handle, err := pathHandle(c)
	if err != nil {
		return err
	}
	v := c.QueryParam("through")
	if v == "" {
		return chat.Errorf(protocol.CodeInvalidRequest, "through is required")
	}
	through, err := queryInt(v, "through", 0)
	if err != nil {
		return err
	}
	creds, err := headerCredentials(c.Request())
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, err := s.authorizeOwner(c, creds, identity.DeleteThroughString(handle, through, creds.TS), handle); err != nil {
		return err
	}
	res, err := s.svc.DeleteThrough(ctx, handle, through)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, res)
}
