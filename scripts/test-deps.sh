#!/usr/bin/env bash
# Installs what the test suite needs and this machine lacks:
#   - PostgreSQL's server binaries (initdb, pg_ctl, postgres), which the test
#     harness uses to start a throwaway cluster; skipped when
#     KEZ_TEST_DATABASE_URL points the tests at an existing server;
#   - Chromium, which the browser tests drive headless (internal/browsertest);
#   - nginx, which the topology test (cmd/kezd, deploy/nginx) puts in front
#     of three kezd processes;
#   - Node.js and web/node_modules (npm ci), with which a test rebuilds the
#     browser app and checks that the committed web/dist matches web/src.
#     Serving the app needs none of it.
set -euo pipefail
cd "$(dirname "$0")/.."

have_postgres() {
	command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

have_chromium() {
	[ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

missing=()
if [ -n "${KEZ_TEST_DATABASE_URL:-}" ]; then
	echo "test-deps: using KEZ_TEST_DATABASE_URL; not installing PostgreSQL"
elif ! have_postgres; then
	# The Debian package creates the unprivileged 'postgres' user the harness
	# runs the cluster as when the tests run as root. Its own cluster is not
	# needed.
	missing+=(postgresql)
fi
if ! have_chromium; then
	missing+=(chromium)
fi
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
	missing+=(nginx-light)
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	missing+=(nodejs npm)
fi

# web_modules installs the app's pinned build tools when they are missing or
# older than package-lock.json.
web_modules() {
	if [ ! -f web/node_modules/.package-lock.json ] || [ web/package-lock.json -nt web/node_modules/.package-lock.json ]; then
		echo "test-deps: npm ci in web/"
		(cd web && npm ci --no-audit --no-fund --loglevel=error)
	fi
}

if [ ${#missing[@]} -eq 0 ]; then
	web_modules
	exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo="sudo"
	else
		echo "test-deps: missing ${missing[*]} and this user cannot install it." >&2
		echo "test-deps: run 'apt-get install -y ${missing[*]}' as root (or set KEZ_TEST_DATABASE_URL for PostgreSQL)." >&2
		exit 1
	fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "test-deps: missing ${missing[*]} and apt-get is not available." >&2
	echo "test-deps: install the PostgreSQL server binaries (initdb, pg_ctl) and Chromium, or set KEZ_TEST_DATABASE_URL." >&2
	exit 1
fi
echo "test-deps: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
if [ -z "${KEZ_TEST_DATABASE_URL:-}" ]; then
	have_postgres || { echo "test-deps: PostgreSQL still not found after install" >&2; exit 1; }
fi
have_chromium || { echo "test-deps: Chromium still not found after install" >&2; exit 1; }
if [[ " ${missing[*]} " == *" nginx-light "* ]]; then
	[ -x /usr/sbin/nginx ] || { echo "test-deps: nginx still not found after install" >&2; exit 1; }
	# The package may start the system nginx on port 80; the tests run their
	# own, so stop the one the install started.
	if [ -s /run/nginx.pid ]; then $sudo /usr/sbin/nginx -s quit || true; fi
fi
web_modules
