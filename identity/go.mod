module github.com/kez-chat/kezd/identity

go 1.26.8

require (
	filippo.io/edwards25519 v1.2.0
	github.com/kez-chat/kezd/protocol v0.0.0
	github.com/oasisprotocol/curve25519-voi v0.0.0-20230904125328-1f23a7beb09a
)

require (
	golang.org/x/crypto v0.0.0-20220321153916-2c7772ba3064 // indirect
	golang.org/x/sys v0.0.0-20220325203850-36772127a21f // indirect
)

replace github.com/kez-chat/kezd/protocol => ../protocol
