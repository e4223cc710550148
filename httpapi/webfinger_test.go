package httpapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/kez-chat/kezd/protocol"
)

type jrdDoc struct {
	Subject    string             `json:"subject"`
	Aliases    []string           `json:"aliases"`
	Properties map[string]string  `json:"properties"`
	Links      []protocol.JRDLink `json:"links"`
}

func (d jrdDoc) rels() []string {
	var rels []string
	for _, l := range d.Links {
		rels = append(rels, l.Rel)
	}
	return rels
}

func TestWebFinger(t *testing.T) {
	const natsURL = "nats://nats.kez.example:4222"
	e := newEnv(t, openSQLite(t), func(c *Config) { c.NATSURL = natsURL })
	alice := newUser(t, "alice")
	e.register(alice)

	get := func(query string) response {
		t.Helper()
		return e.do(http.MethodGet, "/.well-known/webfinger?"+query, nil, nil)
	}
	resource := "resource=" + url.QueryEscape("acct:alice@"+testDomain)

	r := get(resource)
	r.want(t, http.StatusOK)
	if ct := r.header.Get("Content-Type"); ct != "application/jrd+json" {
		t.Errorf("Content-Type %q", ct)
	}
	if o := r.header.Get("Access-Control-Allow-Origin"); o != "*" {
		t.Errorf("Access-Control-Allow-Origin %q", o)
	}
	var doc jrdDoc
	r.decode(t, &doc)
	if doc.Subject != "acct:alice@"+testDomain || len(doc.Aliases) == 0 {
		t.Errorf("subject %q aliases %v", doc.Subject, doc.Aliases)
	}
	if doc.Properties[protocol.PropSigningKey] != alice.sk || doc.Properties[protocol.PropEncryptionKey] != alice.ek {
		t.Errorf("properties %v", doc.Properties)
	}
	want := map[string]string{
		protocol.RelInbox:  "https://" + testDomain + "/v1/inbox/alice",
		protocol.RelStream: "https://" + testDomain + "/v1/inbox/alice/stream",
		protocol.RelNATS:   natsURL,
	}
	if len(doc.Links) != len(want) {
		t.Fatalf("links %+v", doc.Links)
	}
	for _, l := range doc.Links {
		if want[l.Rel] != l.Href {
			t.Errorf("link %s: %q, want %q", l.Rel, l.Href, want[l.Rel])
		}
	}

	t.Run("rel filter", func(t *testing.T) {
		tests := []struct {
			query string
			want  []string
		}{
			{"&rel=" + url.QueryEscape(protocol.RelStream), []string{protocol.RelStream}},
			{"&rel=" + url.QueryEscape(protocol.RelInbox) + "&rel=" + url.QueryEscape(protocol.RelNATS), []string{protocol.RelInbox, protocol.RelNATS}},
			{"&rel=http%3A%2F%2Fexample.com%2Fother", nil},
		}
		for _, tt := range tests {
			r := get(resource + tt.query)
			r.want(t, http.StatusOK)
			var doc jrdDoc
			r.decode(t, &doc)
			got := doc.rels()
			if len(got) != len(tt.want) || doc.Properties[protocol.PropSigningKey] == "" {
				t.Fatalf("%s: rels %v, want %v; properties must stay (%v)", tt.query, got, tt.want, doc.Properties)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("%s: rels %v, want %v", tt.query, got, tt.want)
				}
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			name   string
			query  string
			status int
			code   protocol.Code
		}{
			{"unknown handle", "resource=acct:bob@" + testDomain, http.StatusNotFound, protocol.CodeUnknownHandle},
			{"other domain", "resource=acct:alice@elsewhere.example", http.StatusNotFound, protocol.CodeUnknownHandle},
			{"missing resource", "", http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"no scheme", "resource=alice@" + testDomain, http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"another scheme", "resource=" + url.QueryEscape("https://"+testDomain+"/v1/handles/alice"), http.StatusNotFound, protocol.CodeUnknownHandle},
			{"mailto", "resource=mailto:alice@" + testDomain, http.StatusNotFound, protocol.CodeUnknownHandle},
			{"malformed scheme", "resource=" + url.QueryEscape("ht tp://"+testDomain), http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"no domain", "resource=acct:alice", http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"empty user", "resource=acct:@" + testDomain, http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"two @", "resource=acct:alice@x@" + testDomain, http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"two @, other domain", "resource=acct:alice@" + testDomain + "@elsewhere.example", http.StatusBadRequest, protocol.CodeInvalidRequest},
			{"invalid handle", "resource=acct:Alice@" + testDomain, http.StatusBadRequest, protocol.CodeInvalidHandle},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				r := get(tt.query)
				r.wantError(t, tt.status, tt.code)
				if o := r.header.Get("Access-Control-Allow-Origin"); o != "*" {
					t.Errorf("Access-Control-Allow-Origin %q on an error", o)
				}
			})
		}
	})

	t.Run("without NATS", func(t *testing.T) {
		e := newEnv(t, openSQLite(t))
		e.register(alice)
		r := e.do(http.MethodGet, "/.well-known/webfinger?"+resource, nil, nil)
		r.want(t, http.StatusOK)
		var doc jrdDoc
		r.decode(t, &doc)
		if rels := doc.rels(); len(rels) != 2 || rels[0] != protocol.RelInbox || rels[1] != protocol.RelStream {
			t.Fatalf("rels %v, want inbox and stream only", rels)
		}
	})
}

// TestWebFingerSubjectEchoesDomain: with a port in the public URL, a client
// may ask with or without it, and the subject names the account as asked.
func TestWebFingerSubjectEchoesDomain(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) { c.PublicURL = &url.URL{Scheme: "http", Host: "Chat.Example:8080"} })
	e.register(newUser(t, "alice"))
	for _, asked := range []string{"chat.example:8080", "chat.example", "CHAT.example"} {
		r := e.do(http.MethodGet, "/.well-known/webfinger?resource="+url.QueryEscape("acct:alice@"+asked), nil, nil)
		r.want(t, http.StatusOK)
		var doc jrdDoc
		r.decode(t, &doc)
		if want := "acct:alice@" + strings.ToLower(asked); doc.Subject != want {
			t.Errorf("asked for %s: subject %q, want %q", asked, doc.Subject, want)
		}
	}
}

// TestWebFingerOnlyOwnDomains: the domains are the public URL's and the
// configured aliases. The Host header a client sends names none: asking
// for acct:alice@evil.example with Host: evil.example is 404.
func TestWebFingerOnlyOwnDomains(t *testing.T) {
	e := newEnv(t, openSQLite(t), func(c *Config) {
		c.PublicURL = &url.URL{Scheme: "https", Host: "api.kez.example"}
		c.WebFingerAliases = []string{"kez.example"}
	})
	e.register(newUser(t, "alice"))
	ask := func(domain, host string) response {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.url+"/.well-known/webfinger?resource="+url.QueryEscape("acct:alice@"+domain), nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		return doRequest(t, req)
	}
	for _, domain := range []string{"api.kez.example", "kez.example", "KEZ.example"} {
		ask(domain, "").want(t, http.StatusOK)
	}
	reached := strings.TrimPrefix(e.url, "http://") // 127.0.0.1:<port>
	hostOnly, _, _ := strings.Cut(reached, ":")
	for _, tt := range []struct{ domain, host string }{
		{"evil.example", "evil.example"},
		{reached, ""},
		{hostOnly, ""},
		{"sub.kez.example", "sub.kez.example"},
	} {
		ask(tt.domain, tt.host).wantError(t, http.StatusNotFound, protocol.CodeUnknownHandle)
	}
}
