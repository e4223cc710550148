package client_test

import (
	"context"
	"fmt"
	"log"

	"github.com/kez-chat/kezd/client"
	"github.com/kez-chat/kezd/envelope"
)

// Alice and Bob register, Alice sends Bob an end-to-end encrypted message,
// and Bob follows his inbox, verifying and decrypting what arrives. The
// server at the URL only ever sees the sealed envelope.
func Example() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	c, err := client.New("http://localhost:8080")
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

	// Stream delivers each message once, in order, reconnecting by itself.
	err = c.Stream(ctx, bob, client.StreamOptions{Since: 0}, func(m client.Message) error {
		o, err := c.Open(ctx, bob, m)
		if err != nil {
			return err // altered, forged, or not for bob
		}
		fmt.Printf("%s: %s\n", o.From, o.Plaintext)
		cancel() // one is enough for the example
		return nil
	})
	if err != nil && ctx.Err() == nil {
		log.Fatal(err)
	}
}

// A native NATS client logs in with the kez key and sends over NATS.
func ExampleConnectNATS() {
	ctx := context.Background()
	c, _ := client.New("http://localhost:8080")
	alice, _ := envelope.Generate("alice")

	nc, err := client.ConnectNATS("nats://localhost:4222", alice)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	if _, err := c.SendNATS(ctx, nc, alice, "bob", []byte("hi over NATS")); err != nil {
		log.Fatal(err)
	}
}
