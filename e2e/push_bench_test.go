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

// unlimited lifts the per-connection and per-user rate limits.
func unlimited(c *node.Config) {
	c.Gateway.FrameRate, c.Gateway.FrameBurst = 1e6, 1e6
	c.Gateway.UserRate, c.Gateway.UserBurst = 1e6, 1e6
	c.Gateway.ConnectRate, c.Gateway.ConnectBurst = 1e6, 1e6
}

// BenchmarkPushEndToEnd: messages to offline users, each with one iOS
// device, from the sender's socket to the APNs stand-in's 200: the queue,
// planning (storage reads, presence), the sender and HTTP/2 to the
// stand-in. Reports pushes/s.
//
//	go test -run '^$' -bench PushEndToEnd -benchtime 2000x ./e2e/
func BenchmarkPushEndToEnd(b *testing.B) {
	s := startPushServer(b, time.Second, unlimited)
	ctx := context.Background()
	const users = 200
	for i := 0; i < users; i++ {
		u := fmt.Sprintf("u%d", i)
		c := dialURL(b, s.url(), s.token(u, "phone"))
		if err := c.RegisterPush(ctx, protocol.DevicePush{Platform: "ios", Token: apnsToken(u), Topic: pushTopic}); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
	time.Sleep(500 * time.Millisecond) // everyone offline
	const senders = 8
	conns := make([]*client.Conn, senders)
	for k := range conns {
		conns[k] = dialURL(b, s.url(), s.token(fmt.Sprintf("sender%d", k), "phone"))
	}
	before := len(s.apns.Accepted())
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for k, c := range conns {
		wg.Go(func() {
			for i := k; i < b.N; i += senders {
				if _, err := c.SendTo(ctx, fmt.Sprintf("u%d", i%users), fmt.Sprintf("b%d", i), "benchmark"); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	sent := time.Since(start)
	deadline := time.Now().Add(2 * time.Minute)
	for len(s.apns.Accepted())-before < b.N {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d pushes accepted", len(s.apns.Accepted())-before, b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "pushes/s")
	b.ReportMetric(float64(b.N)/sent.Seconds(), "sends/s")
}

// BenchmarkSendToOffline measures the sender's ack for messages to an
// offline user, without the push pipeline, with it but no device to push
// to (the queue and planning only), and with a device (pushes sent to the
// APNs stand-in, which runs in the same process). The ack never waits for
// the push; what shows is the push work sharing the CPUs.
//
//	go test -run '^$' -bench SendToOffline -benchtime 3000x ./e2e/
func BenchmarkSendToOffline(b *testing.B) {
	for _, v := range []struct{ push, device bool }{{false, true}, {true, false}, {true, true}} {
		withPush := v.push
		b.Run(fmt.Sprintf("push=%v,device=%v", v.push, v.device), func(b *testing.B) {
			var s *testServer
			if withPush {
				s = startPushServer(b, time.Second, unlimited).testServer
			} else {
				s = startServer(b, unlimited)
			}
			ctx := context.Background()
			c := dialURL(b, s.url(), s.token("bob", "phone"))
			if v.device {
				_ = c.RegisterPush(ctx, protocol.DevicePush{Platform: "ios", Token: apnsToken("bob"), Topic: pushTopic})
			}
			_ = c.Close()
			sender := dialURL(b, s.url(), s.token("alice", "phone"))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := sender.SendTo(ctx, "bob", fmt.Sprintf("m%d", i), "hello"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
