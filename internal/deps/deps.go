// Package deps pins the modules kezd's packages are being built on while the
// tree is assembled. TEMPORARY: removed once real imports exist.
package deps

import (
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/labstack/echo/v4"
	_ "github.com/nats-io/jwt/v2"
	_ "github.com/nats-io/nats-server/v2/server"
	_ "github.com/nats-io/nats.go"
	_ "github.com/nats-io/nkeys"
	_ "golang.org/x/crypto/hkdf"
	_ "golang.org/x/crypto/chacha20poly1305"
	_ "modernc.org/sqlite"
)
