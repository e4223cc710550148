package broker

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// topologySummary is what a server's options say of the topology: what
// must be the same whether the server was configured from the printed text
// or given Go options.
type topologySummary struct {
	Accounts    []string
	System      string
	Users       map[string]userSummary // by nkey or name
	Callout     server.AuthCallout
	AuthTimeout float64
	Nonce       bool // every client is sent a nonce
}

type userSummary struct {
	Account, Password                    string
	PubAllow, PubDeny, SubAllow, SubDeny []string
}

func summarize(o *server.Options) topologySummary {
	s := topologySummary{System: o.SystemAccount, Users: map[string]userSummary{}, AuthTimeout: o.AuthTimeout,
		Nonce: o.AlwaysEnableNonce || len(o.Nkeys) > 0}
	for _, a := range o.Accounts {
		s.Accounts = append(s.Accounts, a.Name)
	}
	slices.Sort(s.Accounts)
	user := func(acc *server.Account, password string, p *server.Permissions) userSummary {
		u := userSummary{Password: password}
		if acc != nil {
			u.Account = acc.Name
		}
		if p != nil && p.Publish != nil {
			u.PubAllow, u.PubDeny = p.Publish.Allow, p.Publish.Deny
		}
		if p != nil && p.Subscribe != nil {
			u.SubAllow, u.SubDeny = p.Subscribe.Allow, p.Subscribe.Deny
		}
		return u
	}
	for _, n := range o.Nkeys {
		s.Users[n.Nkey] = user(n.Account, "", n.Permissions)
	}
	for _, u := range o.Users {
		s.Users[u.Username] = user(u.Account, u.Password, u.Permissions)
	}
	if o.AuthCallout != nil {
		s.Callout = *o.AuthCallout
		s.Callout.AuthUsers = slices.Sorted(slices.Values(s.Callout.AuthUsers))
	}
	return s
}

// readConfig has nats-server read the configuration conf, which includes
// the printed text under the name name.
func readConfig(t *testing.T, conf, name, text string) (*server.Options, error) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return server.ProcessConfigFile(path)
}

// TestWriteConfigIsTheEmbeddedTopology: nats-server reads the printed
// configuration into the same accounts, users, permissions and callout as
// the embedded server is given for the same keys.
func TestWriteConfigIsTheEmbeddedTopology(t *testing.T) {
	t.Parallel()
	_, sealed := newCalloutKeys(t)
	app, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	sealed.AppUser, err = app.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	unsealed := *sealed
	unsealed.XKey, unsealed.Timeout = "", 0
	fractional := *sealed
	fractional.Timeout = 1500 * time.Millisecond
	for name, a := range map[string]Auth{"sealed": *sealed, "unsealed, default timeout": unsealed, "fractional timeout": fractional} {
		t.Run(name, func(t *testing.T) {
			topo, err := NewTopology(a)
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			if err := topo.WriteConfig(&text); err != nil {
				t.Fatal(err)
			}
			parsed, err := readConfig(t, "include \"auth.conf\"\n", "auth.conf", text.String())
			if err != nil {
				t.Fatalf("nats-server refuses the printed config: %v\n%s", err, text.String())
			}
			embedded, _, err := serverOptions(Config{Auth: &a})
			if err != nil {
				t.Fatal(err)
			}
			got, want := summarize(parsed), summarize(embedded)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("printed config reads as\n%+v\nthe embedded server has\n%+v\n%s", got, want, text.String())
			}
			if len(want.Users) != 2 || want.Callout.Issuer != a.Issuer || !want.Nonce {
				t.Errorf("embedded topology %+v", want)
			}
		})
	}
}

// TestWriteConfigRefuses: what cannot be printed safely, or is not for an
// external server, is refused.
func TestWriteConfigRefuses(t *testing.T) {
	t.Parallel()
	_, a := newCalloutKeys(t)
	internal := *a
	internal.InternalUser, internal.InternalPassword = "kezd", "s3cret-password"
	topo, err := NewTopology(internal)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := topo.WriteConfig(&out); err == nil || strings.Contains(err.Error(), "s3cret") || out.Len() != 0 {
		t.Errorf("the internal user: %v, wrote %q", err, out.String())
	}
	a.AppUser = a.ServiceUser
	good, err := NewTopology(*a)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Topology){
		"account name breaking out": func(t *Topology) { t.Accounts[0].Name = "AUTH {\n" },
		"two accounts of one name":  func(t *Topology) { t.Accounts[1].Name = t.Accounts[0].Name },
		"callout in no account":     func(t *Topology) { t.Callout.Account = "ELSEWHERE" },
		"quote in a subject":        func(t *Topology) { t.Accounts[0].Users[0].Subscribe = []string{`a" }`} },
		"issuer not an account key": func(t *Topology) { t.Callout.Issuer = a.ServiceUser },
		"negative timeout":          func(t *Topology) { t.Timeout = -time.Second },
	} {
		t.Run(name, func(t *testing.T) {
			topo := good
			topo.Accounts = slices.Clone(good.Accounts)
			for i := range topo.Accounts {
				topo.Accounts[i].Users = slices.Clone(topo.Accounts[i].Users)
			}
			edit(&topo)
			if err := topo.WriteConfig(&bytes.Buffer{}); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestClusterWriteConfigIsTheEmbeddedCluster: nats-server reads the printed
// cluster file, included in a cluster {} block, into the same route
// credentials and routes as the embedded server is given for them.
func TestClusterWriteConfigIsTheEmbeddedCluster(t *testing.T) {
	t.Parallel()
	c := Cluster{User: testRouteUser, Password: testRoutePassword, Routes: []string{"nats://10.0.0.1:6222", "nats-route://kez-2:6222/"}}
	var text bytes.Buffer
	if err := c.WriteConfig(&text); err != nil {
		t.Fatal(err)
	}
	parsed, err := readConfig(t, "cluster {\n  listen: 127.0.0.1:6222\n  include \"cluster-auth.conf\"\n}\n", "cluster-auth.conf", text.String())
	if err != nil {
		t.Fatalf("nats-server refuses the printed cluster file: %v\n%s", err, text.String())
	}
	embedded, _, err := serverOptions(Config{Listen: "127.0.0.1:-1", ClusterListen: "127.0.0.1:6222",
		ClusterUser: c.User, ClusterPassword: c.Password, Routes: c.Routes})
	if err != nil {
		t.Fatal(err)
	}
	type routing struct {
		User, Password string
		Routes         []string
	}
	summary := func(o *server.Options) routing {
		r := routing{User: o.Cluster.Username, Password: o.Cluster.Password}
		for _, u := range o.Routes {
			u := *u
			u.Path = "" // a path means nothing to a route
			r.Routes = append(r.Routes, u.String())
		}
		return r
	}
	got, want := summary(parsed), summary(embedded)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("printed cluster file reads as\n%+v\nthe embedded server has\n%+v\n%s", got, want, text.String())
	}
	if want.User != testRouteUser || len(want.Routes) != 2 || !strings.Contains(want.Routes[0], testRoutePassword) {
		t.Errorf("embedded routing %+v", want)
	}
}
