package authcallout_test

import (
	"sync"
	"testing"

	"github.com/kez-chat/kezd/internal/teststore"
	"github.com/nats-io/nats.go"

	"github.com/kez-chat/kezd/authcallout"
	"github.com/kez-chat/kezd/broker"
	"github.com/kez-chat/kezd/broker/brokertest"
)

// Plain user of the application account that bypasses the callout: the
// benchmark's baseline login.
const (
	plainUser     = "plain"
	plainPassword = "plain-password"
)

// BenchmarkConnect measures one connect+close through the callout (a kez
// login: nonce signature, sealed request, store lookup, signed JWT) against
// a plain user/password login to the same server in the same run. Compare
// the ns/op of callout/* with password/* for the added latency and ratio;
// connects/s is reported as its own metric. The server is kezd's embedded
// one, with the internal user/password kezd's connection uses without an
// app user as the plain login.
func BenchmarkConnect(b *testing.B) {
	k := testKeys(b)
	auth := authcallout.BrokerAuth(public(b, k))
	auth.AppUser, auth.InternalUser, auth.InternalPassword, auth.Timeout = "", plainUser, plainPassword, authTimeout
	url := brokertest.Start(b, broker.Config{Listen: "127.0.0.1:-1", Auth: auth}, nil).ClientURL()
	db := teststore.SQLite(b)
	alice := register(b, db, "alice")
	startCallout(b, url, k, db, authcallout.Config{})

	logins := map[string][]nats.Option{
		"callout":  kezLogin("alice", alice.priv),
		"password": {nats.UserInfo(plainUser, plainPassword)},
	}
	for _, name := range []string{"password", "callout"} {
		opts := append(logins[name], nats.NoReconnect())
		b.Run(name+"/serial", func(b *testing.B) {
			for b.Loop() {
				connectClose(b, url, opts)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
		})
		b.Run(name+"/50-concurrent", func(b *testing.B) {
			const clients = 50
			work := make(chan struct{})
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					for range work {
						connectClose(b, url, opts)
					}
				})
			}
			for b.Loop() {
				work <- struct{}{}
			}
			close(work)
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "connects/s")
		})
	}
}

func connectClose(b *testing.B, url string, opts []nats.Option) {
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.Error(err)
		return
	}
	nc.Close()
}
