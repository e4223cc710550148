package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/kez-chat/kezd/identity"
	"github.com/kez-chat/kezd/protocol"
)

// Account is a handle@domain resolved by WebFinger.
type Account struct {
	Handle        string
	Domain        string
	SigningKey    string
	EncryptionKey string
	// Inbox, Stream and NATS are the link targets; NATS is empty when the
	// server does not expose NATS.
	Inbox  string
	Stream string
	NATS   string
}

// SplitAddress splits "handle@domain". A bare handle has an empty domain.
func SplitAddress(address string) (handle, domain string, err error) {
	handle, domain, _ = strings.Cut(address, "@")
	if err := identity.ValidateHandle(handle); err != nil {
		return "", "", &Error{Code: protocol.CodeInvalidHandle, Message: err.Error()}
	}
	if strings.ContainsAny(domain, "/?#@ ") {
		return "", "", &Error{Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("bad domain %q", domain)}
	}
	return handle, domain, nil
}

// Resolve looks up "handle@domain" with WebFinger at the domain's server.
func (c *Client) Resolve(ctx context.Context, address string) (*Account, error) {
	handle, domain, err := SplitAddress(address)
	if err != nil {
		return nil, err
	}
	if domain == "" {
		return nil, &Error{Code: protocol.CodeInvalidRequest, Message: fmt.Sprintf("%q has no @domain", address)}
	}
	resource := "acct:" + handle + "@" + domain
	u := strings.TrimRight(c.webfinger(domain), "/") + protocol.PathWebFinger + "?resource=" + url.QueryEscape(resource)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", protocol.JRDContentType)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readError(resp)
	}
	var jrd protocol.JRD
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&jrd); err != nil {
		return nil, fmt.Errorf("webfinger %s: %w", resource, err)
	}
	if jrd.Subject != resource {
		return nil, fmt.Errorf("webfinger %s: answer is about %q", resource, jrd.Subject)
	}
	a := &Account{
		Handle:        handle,
		Domain:        domain,
		SigningKey:    jrd.Properties[protocol.PropSigningKey],
		EncryptionKey: jrd.Properties[protocol.PropEncryptionKey],
	}
	if _, err := identity.ParseSigningKey(a.SigningKey); err != nil {
		return nil, fmt.Errorf("webfinger %s: %w", resource, err)
	}
	if _, err := identity.ParseEncryptionKey(a.EncryptionKey); err != nil {
		return nil, fmt.Errorf("webfinger %s: %w", resource, err)
	}
	for _, l := range jrd.Links {
		switch l.Rel {
		case protocol.RelInbox:
			a.Inbox = l.Href
		case protocol.RelStream:
			a.Stream = l.Href
		case protocol.RelNATS:
			a.NATS = l.Href
		}
	}
	return a, nil
}
