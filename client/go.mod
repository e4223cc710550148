module github.com/kez-chat/kezd/client

go 1.26.8

require (
	github.com/kez-chat/kezd/identity v0.0.0
	github.com/kez-chat/kezd/protocol v0.0.0
	github.com/kez-chat/kezd/store/pgtest v0.0.0
	github.com/nats-io/nats.go v1.55.0
	github.com/nats-io/nkeys v0.4.17
	golang.org/x/crypto v0.59.0
)

require (
	filippo.io/edwards25519 v1.2.0 // indirect
	github.com/jackc/pgpassfile v1.0.0 // indirect
	github.com/jackc/pgservicefile v0.0.0-20240606120523-5a60cdf6a761 // indirect
	github.com/jackc/pgx/v5 v5.13.0 // indirect
	github.com/klauspost/compress v1.20.3 // indirect
	github.com/nats-io/nuid v1.0.1 // indirect
	github.com/oasisprotocol/curve25519-voi v0.0.0-20230904125328-1f23a7beb09a // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)

// The other modules of this repository, built from here. A program using the
// client from outside the repository needs the same three replacements until
// the modules are published.
replace (
	github.com/kez-chat/kezd/identity => ../identity
	github.com/kez-chat/kezd/protocol => ../protocol
	github.com/kez-chat/kezd/store/pgtest => ../store/pgtest
)
