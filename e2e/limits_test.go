package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

// A client that stops reading durable traffic is disconnected with its own
// close code (nobody else waits for it), and loses nothing: it resumes
// with sync.
func TestSlowConsumerDisconnectAndResume(t *testing.T) {
	s := startServer(t, func(c *node.Config) {
		c.Gateway.QueueFrames = 16
		c.Gateway.FrameRate, c.Gateway.FrameBurst = 100000, 100000
		c.Gateway.UserRate, c.Gateway.UserBurst = 100000, 100000
	})
	ctx := ctxT(t, 60*time.Second)
	slow := s.dial("slow", "p")
	other := s.dial("other", "p")
	sender := s.dial("sender", "p")
	g, err := sender.Create(ctx, "busy", []string{"slow", "other"})
	if err != nil {
		t.Fatal(err)
	}
	slow.PauseReading()
	body := strings.Repeat("z", protocol.MaxBody-100)
	const n = 600 // ~10 MB: far past socket buffers plus a 16-frame queue
	for i := 1; i <= n; i++ {
		if _, err := sender.Send(ctx, g.ID, fmt.Sprint(i), body); err != nil {
			t.Fatal(err)
		}
	}
	// The other member got everything meanwhile.
	got := 0
	for got < n {
		if m := nextMessage(t, other, 10*time.Second); m.Conv == g.ID {
			got++
		}
	}
	slow.ResumeReading()
	if ce := waitClosed(t, ctx, slow, "slow consumer not disconnected"); ce.Code != protocol.CloseSlowConsumer || !ce.ShouldReconnect() {
		t.Fatalf("close = %v", ce)
	}
	if v := metric(t, s, "parley_slow_consumer_disconnects_total"); v != 1 {
		t.Fatalf("slow consumer metric = %v", v)
	}
	// Resume: everything is there, in order.
	back := s.dial("slow", "p")
	since := map[string]uint64{g.ID: 0}
	var seqs []uint64
	// ~10 MB of bodies come back in 1 MiB answers: about ten round trips.
	for trips := 0; trips < 15; trips++ {
		sy, err := back.Sync(ctx, since, 1000)
		if err != nil {
			t.Fatal(err)
		}
		more := sy.More
		for _, c := range sy.Convs {
			for _, m := range c.Messages {
				seqs = append(seqs, m.Seq)
				since[c.Conv] = m.Seq
			}
			more = more || c.More
		}
		if !more {
			break
		}
	}
	if len(seqs) != n || seqs[0] != 1 || seqs[n-1] != n {
		t.Fatalf("resumed %d messages (%v…)", len(seqs), seqs[:min(3, len(seqs))])
	}
}

// Heartbeats: a client that answers pings stays; one that does not is
// closed with the idle-timeout code.
func TestHeartbeatAndIdleTimeout(t *testing.T) {
	s := startServer(t, func(c *node.Config) {
		// Pings go out from a once-a-second sweep: 1 s apart, and the
		// idle timeout leaves a live client 2 s of slack.
		c.Gateway.Heartbeat = time.Second
		c.Gateway.IdleTimeout = 3 * time.Second
	})
	ctx := ctxT(t, 30*time.Second)
	live := s.dial("alive", "p")
	silent := s.dial("silent", "p", func(o *client.Options) { o.NoAutoPong = true })
	if h := live.Hello(); h.HeartbeatMS != 1000 || h.IdleMS != 3000 {
		t.Fatalf("hello = %+v", h)
	}
	if ce := waitClosed(t, ctx, silent, "silent client not closed"); ce.Code != protocol.CloseIdleTimeout {
		t.Fatalf("close = %v", ce)
	}
	waitUntil(t, 10*time.Second, "pings", func() bool { return live.Pings() >= 3 })
	select {
	case <-live.Done():
		t.Fatalf("live client closed: %v", live.Err())
	default:
	}
}

func TestConnectionLimits(t *testing.T) {
	s := startServer(t, func(c *node.Config) {
		c.Gateway.MaxConnsPerUser = 2
		c.Gateway.ConnectRate, c.Gateway.ConnectBurst = 0.5, 4
	})
	s.dial("alice", "a")
	s.dial("alice", "b")
	if code := dialCode(t, s.url(), s.token("alice", "c")); code != protocol.CloseTooManyConns {
		t.Fatalf("third connection: close %d", code)
	}
	// The fourth attempt from this address is one past the connect burst.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Options{URL: s.url(), Token: s.token("bob", "a")})
	if err == nil {
		c.CloseNow()
		c, err = client.Dial(ctx, client.Options{URL: s.url(), Token: s.token("bob", "b")})
	}
	var ue *client.UpgradeError
	if !errors.As(err, &ue) || ue.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("connect flood: %v", err)
	}
}
