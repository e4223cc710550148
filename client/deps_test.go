package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestStandsAlone checks what a program importing the client builds: the
// client module's packages and what they import contain nothing of the
// server (only the protocol and identity modules of this repository) and
// none of the server's heavy dependencies.
func TestStandsAlone(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{with .Module}}{{.Path}}{{end}}", "github.com/kez-chat/kezd/client/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	allowed := map[string]bool{
		"github.com/kez-chat/kezd/client":   true,
		"github.com/kez-chat/kezd/protocol": true,
		"github.com/kez-chat/kezd/identity": true,
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, mod, _ := strings.Cut(line, " ")
		seen[pkg] = true
		if strings.HasPrefix(mod, "github.com/kez-chat/") && !allowed[mod] {
			t.Errorf("%s comes from module %s, which is not one a client may depend on", pkg, mod)
		}
		for _, banned := range []string{"github.com/jackc/pgx", "github.com/nats-io/nats-server", "sqlite"} {
			if strings.Contains(pkg, banned) {
				t.Errorf("the client depends on %s", pkg)
			}
		}
	}
	// The list is the real one: it holds the client and what it must use.
	for _, want := range []string{"github.com/kez-chat/kezd/client", "github.com/kez-chat/kezd/client/envelope", "github.com/kez-chat/kezd/protocol", "github.com/kez-chat/kezd/identity", "github.com/nats-io/nats.go"} {
		if !seen[want] {
			t.Errorf("go list -deps lacks %s", want)
		}
	}
}
