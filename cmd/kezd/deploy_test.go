package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The container files cannot run here, so what they tell kezd is checked:
// every kezd command in deploy/compose and the Dockerfile goes through
// `kezd check-config` with the environment the file gives it, and the
// image's health check is run against a server that is up and one that is
// not. (deploy/nginx/kezd.conf runs in TestTopology.)

// composeVars stands in for what an operator exports before `docker compose up`.
var composeVars = map[string]string{"KEZ_DB_PASSWORD": "correct-horse-battery"}

var interpolation = regexp.MustCompile(`\$\{([A-Z_]+)(?::([?-])([^}]*))?\}`)

// interpolate does compose's ${VAR}, ${VAR:-default} and ${VAR:?error}.
func interpolate(t *testing.T, s string) string {
	t.Helper()
	return interpolation.ReplaceAllStringFunc(s, func(m string) string {
		g := interpolation.FindStringSubmatch(m)
		if v, ok := composeVars[g[1]]; ok {
			return v
		}
		if g[2] == "-" {
			return g[3]
		}
		t.Errorf("%s is required by the compose file but not set by the test", g[1])
		return ""
	})
}

type composeService struct {
	Build       any               `yaml:"build"`
	Image       string            `yaml:"image"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
}

func TestComposeKezdCommandsCheck(t *testing.T) {
	for _, file := range []string{"../../deploy/compose/compose.yml", "../../deploy/compose/compose.nats.yml"} {
		t.Run(strings.TrimPrefix(file, "../../deploy/compose/"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Services map[string]composeService `yaml:"services"`
			}
			if err := yaml.Unmarshal(raw, &doc); err != nil {
				t.Fatal(err)
			}
			// The environment variables serve reads, to catch a misspelt one
			// (which kezd would silently ignore).
			known := map[string]bool{}
			parseServe(nil, func(k string) string { known[k] = true; return "" }, io.Discard)
			checked := 0
			for name, svc := range doc.Services {
				if svc.Image != "kezd:local" {
					continue
				}
				checked++
				if len(svc.Command) == 0 || svc.Command[0] != "serve" {
					t.Errorf("%s: command %q does not run kezd serve", name, svc.Command)
					continue
				}
				envs := map[string]string{}
				for k, v := range svc.Environment {
					if !known[k] {
						t.Errorf("%s: environment %s is not a kezd serve setting", name, k)
					}
					envs[k] = interpolate(t, v)
				}
				var stdout, stderr bytes.Buffer
				args := append([]string{"check-config"}, svc.Command[1:]...)
				if err := run(t.Context(), args, env(envs), &stdout, &stderr); err != nil {
					t.Errorf("%s: kezd %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
					continue
				}
				if !strings.Contains(stdout.String(), "configuration OK") || !strings.Contains(stdout.String(), "postgres") {
					t.Errorf("%s: check-config said %q, want OK with the Postgres store", name, stdout.String())
				}
				if strings.Contains(stdout.String()+stderr.String(), composeVars["KEZ_DB_PASSWORD"]) {
					t.Errorf("%s: check-config printed the database password", name)
				}
			}
			if checked != 3 {
				t.Errorf("%d kezd services checked, want 3", checked)
			}
		})
	}
}

// dockerfileJSON returns the JSON array of the Dockerfile instruction that
// starts with prefix (CMD, or HEALTHCHECK's CMD), continuation lines joined.
func dockerfileJSON(t *testing.T, text, prefix string) []string {
	t.Helper()
	text = strings.ReplaceAll(text, "\\\n", " ")
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.Index(line, "CMD [")
		if i < 0 {
			t.Fatalf("%s is not in exec (JSON) form: %q", prefix, line)
		}
		var args []string
		if err := json.Unmarshal([]byte(line[i+len("CMD "):]), &args); err != nil {
			t.Fatalf("%s: %v", prefix, err)
		}
		return args
	}
	t.Fatalf("the Dockerfile has no %s line", prefix)
	return nil
}

func TestDockerfileCommandsCheck(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if !regexp.MustCompile(`(?m)^USER 65532`).MatchString(text) || !strings.Contains(text, "CGO_ENABLED=0") {
		t.Error("the image must be static (CGO_ENABLED=0) and run as the non-root user 65532")
	}
	cmd := dockerfileJSON(t, text, "CMD ")
	if cmd[0] != "serve" {
		t.Fatalf("CMD %q does not run kezd serve", cmd)
	}
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), append([]string{"check-config"}, cmd[1:]...), env(nil), &stdout, &stderr); err != nil {
		t.Errorf("kezd check-config %s: %v\n%s", strings.Join(cmd[1:], " "), err, stderr.String())
	}

	hc := dockerfileJSON(t, text, "HEALTHCHECK")
	if hc[0] != "/usr/local/bin/kezd" || hc[1] != "healthcheck" {
		t.Fatalf("HEALTHCHECK runs %q, want kezd healthcheck", hc)
	}
	for _, c := range []struct {
		status int
		ok     bool
	}{{http.StatusOK, true}, {http.StatusServiceUnavailable, false}} {
		var path string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			path = r.URL.Path
			w.WriteHeader(c.status)
		}))
		args := retarget(t, hc[2:], srv.URL)
		err := run(t.Context(), append([]string{"healthcheck"}, args...), env(nil), &stdout, &stderr)
		srv.Close()
		if (err == nil) != c.ok {
			t.Errorf("healthcheck against a %d: err %v, want ok=%v", c.status, err, c.ok)
		}
		if path != "/healthz" {
			t.Errorf("healthcheck asked for %q, want /healthz", path)
		}
	}
}

// retarget points the health check's --url at base, keeping its path.
func retarget(t *testing.T, args []string, base string) []string {
	t.Helper()
	out := append([]string(nil), args...)
	for i := range out {
		if out[i] == "--url" && i+1 < len(out) {
			u := out[i+1]
			if !strings.HasPrefix(u, "http://127.0.0.1:8080/") {
				t.Fatalf("health check URL %q is not the image's own listener", u)
			}
			out[i+1] = base + strings.TrimPrefix(u, "http://127.0.0.1:8080")
			return out
		}
	}
	t.Fatal("the health check has no --url")
	return nil
}

func TestCheckConfig(t *testing.T) {
	for _, c := range []struct {
		name string
		args []string
		ok   bool
		want string
	}{
		{"defaults", nil, true, "sqlite in ./kez-data"},
		{"postgres hides the password", []string{"--database-url", "postgres://kez:s3cret@db/kez"}, true, "postgres://kez:xxxxx@db/kez"},
		{"nats token hidden", []string{"--nats-url", "nats://s3cret@n1:4222"}, true, "nats://xxxxx@n1:4222"},
		{"postgres query password hidden", []string{"--database-url", "postgres://kez@db/kez?password=s3cret"}, true, "postgres://xxxxx@db/kez?password=xxxxx"},
		{"bad flag value", []string{"--drain-delay", "-1s"}, false, ""},
		{"unknown flag", []string{"--no-such-flag"}, false, ""},
		{"missing creds file", []string{"--nats-url", "nats://x:4222", "--nats-creds", "/nonexistent/kezd.creds"}, false, ""},
		{"bad seed", []string{"--callout-issuer-seed", "SAnotaseed"}, false, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(t.Context(), append([]string{"check-config"}, c.args...), env(nil), &stdout, &stderr)
			if (err == nil) != c.ok {
				t.Fatalf("err %v, want ok=%v", err, c.ok)
			}
			if !c.ok && exitCode(err) != 2 {
				t.Errorf("exit code %d for %v, want 2", exitCode(err), err)
			}
			if !strings.Contains(stdout.String(), c.want) {
				t.Errorf("output %q lacks %q", stdout.String(), c.want)
			}
			if strings.Contains(fmt.Sprint(stdout.String(), stderr.String(), err), "s3cret") {
				t.Error("check-config printed a secret")
			}
		})
	}
}
