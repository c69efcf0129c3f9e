package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

func nextMessage(t *testing.T, c *client.Conn, d time.Duration) protocol.Message {
	t.Helper()
	ev, err := c.WaitFor(ctxT(t, d), client.OfType(protocol.TypeMessage))
	if err != nil {
		t.Fatalf("waiting for a message: %v", err)
	}
	m, err := ev.Message()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// Two users on four devices: live delivery, echo to the sender's other
// device (not to the sending one), receipts back to the sender, typing.
func TestTwoUsersThreeDevices(t *testing.T) {
	s := startServer(t)
	alicePhone := s.dial("alice", "phone")
	aliceLaptop := s.dial("alice", "laptop")
	bob := s.dial("bob", "phone")
	bobLaptop := s.dial("bob", "laptop")
	ctx := ctxT(t, 20*time.Second)

	ack, err := alicePhone.SendTo(ctx, "bob", "c1", "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	if ack.Seq != 1 || ack.CMID != "c1" || ack.Conv == "" {
		t.Fatalf("ack = %+v", ack)
	}
	for name, c := range map[string]*client.Conn{"bob": bob, "bob laptop": bobLaptop, "alice laptop": aliceLaptop} {
		m := nextMessage(t, c, 5*time.Second)
		if m.Conv != ack.Conv || m.Seq != 1 || m.Body != "hi bob" || m.From != "alice" || m.Device != "phone" || m.CMID != "c1" {
			t.Fatalf("%s got %+v", name, m)
		}
	}

	// Bob answers; every alice device gets it.
	ack2, err := bob.Send(ctx, ack.Conv, "b1", "hi alice")
	if err != nil || ack2.Seq != 2 {
		t.Fatalf("bob send: %+v %v", ack2, err)
	}
	for _, c := range []*client.Conn{alicePhone, aliceLaptop} {
		if m := nextMessage(t, c, 5*time.Second); m.Seq != 2 || m.From != "bob" {
			t.Fatalf("alice got %+v", m)
		}
	}
	// The sending device got an ack, not an echo: its next message is
	// from bob (seq 2), which the loop above checked.

	// Receipts: bob's delivered and read reach alice's devices.
	// The reader's other device sees the read too (it clears its unread).
	for _, kind := range []string{"delivered", "read"} {
		if err := bob.Receipt(ctx, ack.Conv, kind, 1); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*client.Conn{alicePhone, aliceLaptop, bobLaptop} {
			ev, err := c.WaitFor(ctx, func(e client.Event) bool {
				r, err := e.Receipt()
				return err == nil && r.Kind == kind
			})
			if err != nil {
				t.Fatalf("receipt %s: %v", kind, err)
			}
			r, _ := ev.Receipt()
			if r.User != "bob" || r.Seq != 1 || r.Conv != ack.Conv {
				t.Fatalf("receipt = %+v", r)
			}
		}
	}
	// The watermark is visible in the conversation list.
	convs, err := alicePhone.Convs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 1 || convs[0].LastSeq != 2 || convs[0].Last == nil || convs[0].Last.Body != "hi alice" {
		t.Fatalf("convs = %+v", convs)
	}
	// Unread counts only others' messages: bob read seq 1 and sent seq 2;
	// alice read nothing, sent seq 1, and bob's seq 2 is new to her.
	bc, err := bob.Convs(ctx)
	if err != nil || len(bc) != 1 || bc[0].ReadSeq != 1 || bc[0].Unread != 0 {
		t.Fatalf("bob convs = %+v %v", bc, err)
	}
	if convs[0].Unread != 1 {
		t.Fatalf("alice unread = %d, want 1", convs[0].Unread)
	}

	// Typing goes to the other user, never persisted.
	if err := bob.Typing(ctx, ack.Conv, "start"); err != nil {
		t.Fatal(err)
	}
	ev, err := aliceLaptop.WaitFor(ctx, client.OfType("typing"))
	if err != nil {
		t.Fatal(err)
	}
	ty, _ := ev.Typing()
	if ty.User != "bob" || ty.State != "start" {
		t.Fatalf("typing = %+v", ty)
	}
	res, err := alicePhone.History(ctx, ack.Conv, 0, 0, 10)
	if err != nil || len(res.Messages) != 2 {
		t.Fatalf("history = %+v %v", res, err)
	}
}

// Concurrent senders in one group: every device sees every message once,
// in one order (seq), and all devices agree on it.
func TestOneOrderUnderConcurrentSenders(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 30*time.Second)
	users := []string{"u1", "u2", "u3"}
	conns := map[string]*client.Conn{}
	for _, u := range users {
		conns[u] = s.dial(u, "d")
	}
	g, err := conns["u1"].Create(ctx, "team", []string{"u2", "u3"})
	if err != nil {
		t.Fatal(err)
	}
	const per = 40
	var wg sync.WaitGroup
	errs := make(chan error, len(users))
	for _, u := range users {
		wg.Add(1)
		go func(u string) {
			defer wg.Done()
			for i := 0; i < per; i++ {
				if _, err := conns[u].Send(ctx, g.ID, fmt.Sprintf("%s-%d", u, i), "m"); err != nil {
					errs <- err
					return
				}
			}
		}(u)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := per * len(users)
	// Each device receives the others' messages live; with its own acks it
	// knows every seq. Check no gaps and that all devices agree via history.
	for _, u := range users {
		seen := map[uint64]string{}
		var last uint64
		for len(seen) < total-per {
			m := nextMessage(t, conns[u], 10*time.Second)
			if m.From == u {
				t.Fatalf("%s got its own message echoed on the sending device", u)
			}
			if _, dup := seen[m.Seq]; dup {
				t.Fatalf("%s got seq %d twice", u, m.Seq)
			}
			if m.Seq <= last {
				t.Fatalf("%s got seq %d after %d", u, m.Seq, last)
			}
			last = m.Seq
			seen[m.Seq] = m.CMID
		}
	}
	var ref []string
	for _, u := range users {
		res, err := conns[u].History(ctx, g.ID, 0, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Messages) != total {
			t.Fatalf("%s history has %d messages, want %d", u, len(res.Messages), total)
		}
		var order []string
		for i, m := range res.Messages {
			if m.Seq != uint64(i+1) {
				t.Fatalf("gap: position %d has seq %d", i, m.Seq)
			}
			order = append(order, m.CMID)
		}
		if ref == nil {
			ref = order
		} else if fmt.Sprint(ref) != fmt.Sprint(order) {
			t.Fatalf("devices disagree on order")
		}
	}
}

// A retry with the same client message id returns the original ack, also
// when the socket dropped right after the send was written.
func TestIdempotentRetry(t *testing.T) {
	s := startServer(t)
	ctx := ctxT(t, 20*time.Second)
	a := s.dial("alice", "phone")
	first, err := a.SendTo(ctx, "bob", "same", "once")
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.SendTo(ctx, "bob", "same", "once")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.Seq != first.Seq || again.TS != first.TS {
		t.Fatalf("retry ack = %+v, first = %+v", again, first)
	}

	// Write a send and drop the socket without waiting for the ack.
	if err := a.WriteFrame(ctx, protocol.Frame{Type: protocol.TypeSend, ID: "x", To: "bob", CMID: "dropped", Body: "maybe"}); err != nil {
		t.Fatal(err)
	}
	_ = a.CloseNow()
	a2 := s.dial("alice", "phone")
	retry, err := a2.SendTo(ctx, "bob", "dropped", "maybe")
	if err != nil {
		t.Fatal(err)
	}
	res, err := a2.History(ctx, retry.Conv, 0, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range res.Messages {
		if m.CMID == "dropped" {
			n++
			if m.Seq != retry.Seq {
				t.Fatalf("stored seq %d, retry acked %d", m.Seq, retry.Seq)
			}
		}
	}
	if n != 1 || len(res.Messages) != 2 {
		t.Fatalf("want exactly one 'dropped' message and 2 in all, history = %+v", res.Messages)
	}
}

// A device offline while 1,000 messages arrive catches up, in order, in a
// bounded number of round trips.
func TestOfflineCatchUp(t *testing.T) {
	s := startServer(t, func(c *node.Config) {
		c.Gateway.FrameRate, c.Gateway.FrameBurst = 100000, 100000
		c.Gateway.UserRate, c.Gateway.UserBurst = 100000, 100000
	})
	ctx := ctxT(t, 60*time.Second)
	bob := s.dial("bob", "phone")
	a := s.dial("alice", "phone")
	first, err := a.SendTo(ctx, "bob", "m0", "0")
	if err != nil {
		t.Fatal(err)
	}
	nextMessage(t, bob, 5*time.Second)
	_ = bob.Close()

	const n = 1000
	for i := 1; i <= n; i++ {
		if _, err := a.Send(ctx, first.Conv, fmt.Sprintf("m%d", i), fmt.Sprint(i)); err != nil {
			t.Fatal(err)
		}
	}
	bob = s.dial("bob", "phone", func(o *client.Options) { o.Resume = true })
	// hello tells where the conversation stands: no round trip needed to
	// find which conversations moved.
	res := bob.Hello().Resume
	if res == nil || len(res.Convs) != 1 || res.Convs[0].LastSeq != n+1 {
		t.Fatalf("hello resume = %+v", res)
	}
	since := map[string]uint64{first.Conv: 1}
	var got []protocol.Message
	trips := 0
	for {
		trips++
		if trips > 5 {
			t.Fatalf("more than 5 round trips to catch up")
		}
		sy, err := bob.Sync(ctx, since, 500)
		if err != nil {
			t.Fatal(err)
		}
		more := false
		for _, c := range sy.Convs {
			got = append(got, c.Messages...)
			if len(c.Messages) > 0 {
				since[c.Conv] = c.Messages[len(c.Messages)-1].Seq
			}
			more = more || c.More
		}
		if !more && !sy.More {
			break
		}
	}
	if len(got) != n {
		t.Fatalf("caught up %d messages, want %d", len(got), n)
	}
	for i, m := range got {
		if m.Seq != uint64(i+2) || m.Body != fmt.Sprint(i+1) {
			t.Fatalf("message %d = %+v", i, m)
		}
	}
	if trips != 3 { // 500 + 500 + an empty confirmation
		t.Logf("round trips: %d", trips)
	}
	// Nothing more once caught up.
	sy, err := bob.Sync(ctx, since, 500)
	if err != nil || len(sy.Convs) != 0 {
		t.Fatalf("sync after catch-up = %+v %v", sy, err)
	}
}

// Kill the server process right after an ack, before the recipient
// reconnects; restart it on the same data directory: the message is there,
// once, and a retry of the send is recognised.
func TestCrashAfterAck(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	dir := t.TempDir()
	c1 := startChild(t, dir)
	key := readKey(t, dir)
	alice := dialURL(t, "ws://"+c1.addr, mint(t, key, "alice", "phone", time.Hour))
	ctx := ctxT(t, 60*time.Second)
	ack, err := alice.SendTo(ctx, "bob", "durable-1", "survives")
	if err != nil {
		t.Fatal(err)
	}
	c1.kill(t)

	c2 := startChild(t, dir)
	bob := dialURL(t, "ws://"+c2.addr, mint(t, key, "bob", "phone", time.Hour))
	sy, err := bob.Sync(ctx, map[string]uint64{ack.Conv: 0}, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(sy.Convs) != 1 || len(sy.Convs[0].Messages) != 1 {
		t.Fatalf("after crash: %+v", sy)
	}
	m := sy.Convs[0].Messages[0]
	if m.Seq != ack.Seq || m.Body != "survives" || m.CMID != "durable-1" {
		t.Fatalf("after crash: %+v", m)
	}
	alice2 := dialURL(t, "ws://"+c2.addr, mint(t, key, "alice", "phone", time.Hour))
	again, err := alice2.SendTo(ctx, "bob", "durable-1", "survives")
	if err != nil || !again.Duplicate || again.Seq != ack.Seq {
		t.Fatalf("retry after crash = %+v %v", again, err)
	}
	next, err := alice2.SendTo(ctx, "bob", "durable-2", "next")
	if err != nil || next.Seq != ack.Seq+1 {
		t.Fatalf("next after crash = %+v %v", next, err)
	}
}

// Graceful drain: bye with a jittered reconnect delay, close 4000, readyz
// false while draining.
func TestDrain(t *testing.T) {
	s := startServer(t)
	c := s.dial("alice", "phone")
	ctx := ctxT(t, 20*time.Second)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.n.Shutdown(context.Background())
	}()
	ev, err := c.WaitFor(ctx, client.OfType(protocol.TypeBye))
	if err != nil {
		t.Fatal(err)
	}
	bye, _ := ev.Bye()
	if bye.ReconnectAfterMS < 0 || bye.ReconnectAfterMS > 100 {
		t.Fatalf("bye = %+v", bye)
	}
	if ce := waitClosed(t, ctx, c, "connection not closed by drain"); ce.Code != protocol.CloseShutdown {
		t.Fatalf("close = %v", ce)
	}
	<-done
	if s.n.Gateway().Ready() {
		t.Fatal("ready after drain")
	}

}
