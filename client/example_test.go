package client_test

import (
	"context"
	"errors"
	"log"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/protocol"
)

// A device connects, sends a message, waits for a reply in the same
// conversation, and tells apart the ways a connection can end.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, client.Options{URL: "ws://127.0.0.1:8080", Token: "<jwt>", Resume: true})
	var ce *client.CloseError
	if errors.As(err, &ce) && !ce.ShouldReconnect() {
		log.Fatalf("refused: %v", ce) // e.g. 4500: get a new token first
	}
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	ack, err := c.Send(ctx, "c1", "cmid-1", "hello")
	var pe *protocol.Error
	if errors.As(err, &pe) && pe.Code == protocol.CodeRateLimited {
		time.Sleep(time.Duration(pe.RetryAfter) * time.Millisecond) // then retry with the same cmid
	}
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("durable as seq %d", ack.Seq)

	ev, err := c.WaitFor(ctx, func(ev client.Event) bool {
		m, err := ev.Message()
		return err == nil && m.Conv == "c1" && m.Seq > ack.Seq
	})
	if err != nil {
		log.Fatal(err) // after the connection ended: c.Err(), e.g. a *CloseError
	}
	m, _ := ev.Message()
	log.Printf("%s: %s", m.From, m.Body)
}
