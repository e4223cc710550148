package httpapi

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/kez-chat/kezd/chat"
	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// webfinger serves GET /.well-known/webfinger?resource=acct:<handle>@<domain>.
// The domain is PublicURL's host or one of WebFingerAliases; any other
// domain is 404, whatever the request's Host header says, as is an unknown
// handle. rel, which may repeat, keeps only the links with those
// relations (RFC 7033 §4.3); it never filters the rest of the document.
func (s *Server) webfinger(c echo.Context) error {
	// Browsers on other origins resolve addresses, and errors must be
	// readable to them too.
	c.Response().Header().Set(echo.HeaderAccessControlAllowOrigin, "*")
	q := c.QueryParams()
	resource := q.Get("resource")
	if resource == "" {
		return chat.Errorf(protocol.CodeInvalidRequest, "resource is required, as acct:<handle>@<domain>")
	}
	local, domain, err := parseAcct(resource)
	if err != nil {
		return err
	}
	// The Host header is the client's to choose: it names no domain of ours.
	if !s.isOurDomain(domain) {
		return chat.Errorf(protocol.CodeUnknownHandle, "%q is not a domain this server answers for", domain)
	}
	if err := identity.ValidateHandle(local); err != nil {
		return chat.Errorf(protocol.CodeInvalidHandle, "%v", err)
	}
	h, err := s.svc.Lookup(c.Request().Context(), local)
	if err != nil {
		return err
	}

	links := []protocol.JRDLink{
		{Rel: protocol.RelInbox, Type: "application/json", Href: s.base + protocol.InboxPath(h.Handle)},
		{Rel: protocol.RelStream, Type: "text/event-stream", Href: s.base + protocol.StreamPath(h.Handle)},
	}
	if s.cfg.NATSURL != "" {
		links = append(links, protocol.JRDLink{Rel: protocol.RelNATS, Href: s.cfg.NATSURL})
	}
	if rels := q["rel"]; len(rels) > 0 {
		links = slices.DeleteFunc(links, func(l protocol.JRDLink) bool { return !slices.Contains(rels, l.Rel) })
	}
	doc := protocol.JRD{
		// The subject names the account as it was asked for (RFC 7033 §4.4.1
		// lets it differ, but clients compare it with what they asked).
		Subject: "acct:" + h.Handle + "@" + strings.ToLower(domain),
		Aliases: []string{s.base + protocol.HandlePath(h.Handle)},
		Properties: map[string]string{
			protocol.PropSigningKey:    h.SigningKey,
			protocol.PropEncryptionKey: h.EncryptionKey,
		},
		Links: links,
	}
	return writeJSONType(c, http.StatusOK, protocol.JRDContentType, doc)
}

// parseAcct splits an acct: URI (RFC 7565) into its user and host. A URI
// of another scheme names no resource this server has: 404 (RFC 7033
// §4.2). Anything else is a malformed resource: 400.
func parseAcct(resource string) (user, host string, err error) {
	scheme, rest, ok := strings.Cut(resource, ":")
	if !ok {
		return "", "", chat.Errorf(protocol.CodeInvalidRequest, "resource must be acct:<handle>@<domain>")
	}
	if !strings.EqualFold(scheme, "acct") {
		if u, err := url.Parse(resource); err == nil && u.Scheme != "" {
			return "", "", chat.Errorf(protocol.CodeUnknownHandle, "no such resource: this server describes acct:<handle>@<domain> only")
		}
		return "", "", chat.Errorf(protocol.CodeInvalidRequest, "resource must be acct:<handle>@<domain>")
	}
	// One literal @: in the user part it must be percent-encoded (RFC
	// 7565 §7), and a host has none.
	i := strings.IndexByte(rest, '@')
	if i <= 0 || i == len(rest)-1 || strings.IndexByte(rest[i+1:], '@') >= 0 {
		return "", "", chat.Errorf(protocol.CodeInvalidRequest, "resource must be acct:<handle>@<domain>")
	}
	// The user part may be percent-encoded (RFC 7565 §7).
	user, err = url.PathUnescape(rest[:i])
	if err != nil {
		return "", "", chat.Errorf(protocol.CodeInvalidRequest, "resource: %v", err)
	}
	return user, rest[i+1:], nil
}

// domain is the WebFinger domain: PublicURL's host, with a port only when
// the URL names one.
func (s *Server) domain() string { return strings.ToLower(s.cfg.PublicURL.Host) }

// isOurDomain accepts the public URL's domain, with or without its port
// since a client may name the host alone, and the configured aliases; host
// names are case-insensitive.
func (s *Server) isOurDomain(d string) bool {
	d = strings.ToLower(d)
	if d == s.domain() || d == strings.ToLower(s.cfg.PublicURL.Hostname()) {
		return true
	}
	return slices.ContainsFunc(s.cfg.WebFingerAliases, func(a string) bool { return strings.EqualFold(a, d) })
}
