package loadtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/cluster"
	"github.com/parley-im/parley/internal/node"
)

// startCluster starts three gateways on a three-server NATS cluster that
// let the tests connect and send as fast as they like, and returns it with
// the shared dev key once every gateway sees the others.
func startCluster(t *testing.T) (*cluster.Cluster, []byte) {
	t.Helper()
	dir := t.TempDir()
	c, err := cluster.Start(cluster.Config{
		DataDir: dir,
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Node: node.Config{
			Dev:           "true",
			DrainTimeout:  5 * time.Second,
			NodeHeartbeat: 100 * time.Millisecond,
			NodeTimeout:   600 * time.Millisecond,
			Gateway: gateway.Config{
				ConnectRate: 100000, ConnectBurst: 100000,
				FrameRate: 100000, FrameBurst: 100000,
				UserRate: 100000, UserBurst: 100000,
			},
		},
	})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(c.Close)
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 10*time.Second, "every gateway to see the cluster", func() bool {
		for i := range c.Nodes() {
			if len(c.Node(i).Hub().Nodes()) != c.Nodes() {
				return false
			}
		}
		return true
	})
	return c, key
}

// waitUntil polls cond every 10 ms until it holds, failing the test after
// timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clusterConfig is a short run of scenario against every gateway of c.
func clusterConfig(c *cluster.Cluster, key []byte, scenario string, seed int64) Config {
	return Config{
		URLs: c.URLs(), Key: key, Scenario: scenario, Seed: seed,
		ConnectRate: 500, Duration: time.Second, Warmup: 300 * time.Millisecond, Log: io.Discard,
	}
}

// TestCluster points the load tester at a 3-gateway cluster: chat pairs
// land where --placement asks and every message crosses (or not) the
// cluster without loss, group members spread over every gateway, and
// fan-out subscribers on every gateway get every publish from a publisher
// on the first.
func TestCluster(t *testing.T) {
	c, key := startCluster(t)
	n := c.Nodes()
	for _, tc := range []struct {
		placement string
		seed      int64
		// recvOn is the gateway of pair k's receiver.
		recvOn func(k int) int
	}{
		{"cross", 11, func(k int) int { return (k + 1) % n }},
		{"same", 12, func(k int) int { return k % n }},
	} {
		t.Run("chat-"+tc.placement, func(t *testing.T) {
			const pairs = 6
			cfg := clusterConfig(c, key, "chat", tc.seed)
			cfg.Conns, cfg.Rate = pairs, 60 // 10/s per sender
			if tc.placement == "same" {
				cfg.Placement = "same"
			} // cross is the default with several URLs
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			type result struct {
				r   *Report
				err error
			}
			done := make(chan result, 1)
			go func() {
				r, err := Run(ctx, cfg)
				done <- result{r, err}
			}()
			// While the run holds its connections, each user is on the
			// gateway its placement names and on no other.
			sessions := func(user string) []int {
				out := make([]int, n)
				for i := range n {
					out[i] = c.Node(i).Hub().SessionCount(user)
				}
				return out
			}
			want := func(on int) []int {
				out := make([]int, n)
				out[on] = 1
				return out
			}
			waitUntil(t, 10*time.Second, "every pair connected", func() bool {
				for k := range pairs {
					if fmt.Sprint(sessions(userID(&cfg, "s", k))) != fmt.Sprint(want(k%n)) ||
						fmt.Sprint(sessions(userID(&cfg, "r", k))) != fmt.Sprint(want(tc.recvOn(k))) {
						return false
					}
				}
				return true
			})
			res := <-done
			if res.err != nil {
				t.Fatal(res.err)
			}
			r := res.r
			logSummary(t, r)
			ch := r.Chat
			if ch.Placement != tc.placement {
				t.Errorf("report placement %q, want %q", ch.Placement, tc.placement)
			}
			if ch.Sent == 0 || ch.Acked != ch.Sent || ch.Received != ch.Sent || ch.Lost != 0 || ch.Duplicated != 0 || ch.Unacked != 0 || len(ch.SendErrors) != 0 {
				t.Errorf("chat %+v", ch)
			}
			if r.Counters[CountExpected] != ch.Acked || r.Counters[CountReceived] != ch.Received {
				t.Errorf("recorder expected %d received %d, books %+v", r.Counters[CountExpected], r.Counters[CountReceived], ch)
			}
			// Six pairs over three gateways: four connections each.
			urls := c.URLs()
			if len(r.URLs) != n {
				t.Fatalf("report URLs %+v", r.URLs)
			}
			for i, u := range r.URLs {
				if u.URL != urls[i] || u.Opened != 2*pairs/int64(n) {
					t.Errorf("URL %d: %+v, want %s with %d connections", i, u, urls[i], 2*pairs/n)
				}
			}
			// The summary and the HTML report say so too.
			var sum, page strings.Builder
			r.WriteSummary(&sum)
			if err := WriteHTML(&page, r); err != nil {
				t.Fatal(err)
			}
			for _, u := range urls {
				if !strings.Contains(sum.String(), u+" 4") || !strings.Contains(page.String(), u+" (4 conns)") {
					t.Errorf("summary or HTML lacks %s with 4 connections:\n%s", u, sum.String())
				}
			}
			if !strings.Contains(page.String(), "chat placement "+tc.placement) {
				t.Errorf("HTML lacks the placement")
			}
		})
	}

	t.Run("group", func(t *testing.T) {
		cfg := clusterConfig(c, key, "group", 15)
		cfg.Conns, cfg.GroupSize, cfg.Rate = 15, 5, 50 // 3 groups of 5, each on every gateway
		r := mustRun(t, cfg, 30*time.Second)
		logSummary(t, r)
		g := r.Group
		if g.Sent == 0 || g.Acked != g.Sent || g.Expected != 4*g.Acked || g.Received != g.Expected || g.Lost != 0 || g.Duplicated != 0 || g.Unexpected != 0 {
			t.Errorf("group %+v", g)
		}
		for i, u := range r.URLs {
			if u.Opened != 5 {
				t.Errorf("URL %d: %+v, want 5 connections", i, u)
			}
		}
	})

	for i, client := range []string{"lean", "full"} {
		t.Run("fanout-"+client, func(t *testing.T) {
			const subs = 30
			cfg := clusterConfig(c, key, "fanout", 13+int64(i))
			cfg.Conns, cfg.Rate, cfg.Client = subs, 20, client
			var before []float64
			for g := range n {
				before = append(before, metric(t, c.Node(g), `parley_frames_in_total{type="sub"`))
			}
			r := mustRun(t, cfg, 30*time.Second)
			logSummary(t, r)
			f := r.Fanout
			if f.Subscribers != subs || f.Published == 0 || len(f.SubscribeErrors) != 0 {
				t.Errorf("subscribers %d published %d errors %v", f.Subscribers, f.Published, f.SubscribeErrors)
			}
			if f.Expected != subs*f.Published || f.Received != f.Expected || f.NotReceived != 0 || f.Duplicates != 0 ||
				f.MinPerSub != f.Published || f.MaxPerSub != f.Published || f.SubsMissing != 0 || f.Disconnected != 0 {
				t.Errorf("delivery: published %d expected %d received %d not received %d dup %d per subscriber %d..%d missing %d disconnected %d",
					f.Published, f.Expected, f.Received, f.NotReceived, f.Duplicates, f.MinPerSub, f.MaxPerSub, f.SubsMissing, f.Disconnected)
			}
			// Ten subscribers on each gateway, the publisher on the first.
			if len(r.URLs) != n {
				t.Fatalf("report URLs %+v", r.URLs)
			}
			for g, u := range r.URLs {
				want := int64(subs / n)
				if g == 0 {
					want++
				}
				if u.Opened != want {
					t.Errorf("URL %d: %+v, want %d connections", g, u, want)
				}
				// The gateway agrees: it took its subscribers' sub frames.
				if got := metric(t, c.Node(g), `parley_frames_in_total{type="sub"`) - before[g]; got != subs/float64(n) {
					t.Errorf("gateway %d handled %v sub frames, want %d", g, got, subs/n)
				}
			}
		})
	}
}

// TestChatPlacement: pair k's sender on URL k mod n, its receiver on the
// next URL (cross) or the same one (same).
func TestChatPlacement(t *testing.T) {
	cross, same := chatPlacement("cross", 3), chatPlacement("same", 3)
	for k := range 7 {
		if got := cross(2 * k); got != k%3 {
			t.Errorf("cross: sender %d on %d", k, got)
		}
		if got := cross(2*k + 1); got != (k+1)%3 {
			t.Errorf("cross: receiver %d on %d", k, got)
		}
		if s, r := same(2*k), same(2*k+1); s != k%3 || r != k%3 {
			t.Errorf("same: pair %d on %d and %d", k, s, r)
		}
	}
	if one := chatPlacement("cross", 1); one(1) != 0 || one(6) != 0 {
		t.Error("one URL: not all on it")
	}
}
