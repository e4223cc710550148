package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/client/envelope"
	"github.com/kez-chat/kezd/client/kezdtest"
)

// Alice and Bob register, Alice sends Bob an end-to-end encrypted message,
// and Bob follows his inbox, verifying and decrypting what arrives. The
// server only ever sees the sealed envelope.
func Example() {
	// A throwaway kezd for the example to talk to; yours has an https URL.
	kezd, err := kezdtest.Launch(kezdtest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer kezd.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.New(kezd.URL)
	if err != nil {
		log.Fatal(err)
	}
	alice, _ := envelope.Generate("alice") // keep these: they are the identities
	bob, _ := envelope.Generate("bob")
	for _, id := range []*envelope.Identity{alice, bob} {
		if _, err := c.Register(ctx, id); err != nil {
			log.Fatal(err)
		}
	}

	if _, err := c.Send(ctx, alice, "bob", []byte("hello bob")); err != nil {
		log.Fatal(err)
	}

	// Stream delivers each message once, in order, reconnecting by itself,
	// until its context ends.
	sctx, stop := context.WithCancel(ctx)
	err = c.Stream(sctx, bob, client.StreamOptions{Since: 0}, func(m client.Message) error {
		o, err := c.Open(ctx, bob, m)
		if err != nil {
			return err // altered, forged, or not for bob
		}
		fmt.Printf("%s: %s\n", o.From, o.Plaintext)
		stop() // one is enough for the example
		return nil
	})
	if err != nil && sctx.Err() == nil {
		log.Fatal(err)
	}
	// Output: alice: hello bob
}

// Native NATS clients log in with the kez key: Bob subscribes to his inbox
// subject and Alice sends with a request on hers.
func ExampleConnectNATS() {
	kezd, err := kezdtest.Launch(kezdtest.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer kezd.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, _ := client.New(kezd.URL)
	alice, _ := envelope.Generate("alice")
	bob, _ := envelope.Generate("bob")
	for _, id := range []*envelope.Identity{alice, bob} {
		if _, err := c.Register(ctx, id); err != nil {
			log.Fatal(err)
		}
	}

	bnc, err := client.ConnectNATS(kezd.NATSURL, bob)
	if err != nil {
		log.Fatal(err)
	}
	defer bnc.Close()
	got := make(chan client.Message, 1)
	if _, err := client.SubscribeInbox(bnc, "bob", func(m client.Message) { got <- m }); err != nil {
		log.Fatal(err)
	}
	if err := bnc.FlushWithContext(ctx); err != nil { // the subscription is in place
		log.Fatal(err)
	}

	anc, err := client.ConnectNATS(kezd.NATSURL, alice)
	if err != nil {
		log.Fatal(err)
	}
	defer anc.Close()
	if _, err := c.SendNATS(ctx, anc, alice, "bob", []byte("hi over NATS")); err != nil {
		log.Fatal(err)
	}

	select {
	case m := <-got:
		o, err := c.Open(ctx, bob, m)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %s\n", o.From, o.Plaintext)
	case <-ctx.Done():
		log.Fatal("no message")
	}
	// Output: alice: hi over NATS
}
