package natsbench

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"sync"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startCluster starts n NATS servers in this process, joined as one cluster
// over loopback routes, and waits until every server has a route to every
// other. The servers shut down when tb's test ends.
func startCluster(tb testing.TB, n int) []*natsserver.Server {
	tb.Helper()
	servers := make([]*natsserver.Server, 0, n)
	var routes []*url.URL
	for i := range n {
		// Every server routes to all earlier ones: an explicit full mesh
		// that does not depend on gossip.
		s := startServer(tb, i, routes)
		servers = append(servers, s)
		routes = append(routes, routeURL(s))
	}
	waitFor(tb, 10*time.Second, func() bool {
		for _, s := range servers {
			if s.NumRemotes() != n-1 {
				return false
			}
		}
		return true
	}, "cluster routes")
	for _, s := range servers {
		baseSubs.Store(s, s.GlobalAccount().TotalSubs())
	}
	return servers
}

// startServer starts cluster member i on loopback random ports, routing to
// routes, and shuts it down when tb's test ends.
func startServer(tb testing.TB, i int, routes []*url.URL) *natsserver.Server {
	tb.Helper()
	opts := &natsserver.Options{
		ServerName: fmt.Sprintf("s%d", i),
		Host:       "127.0.0.1",
		Port:       -1,
		NoLog:      true,
		NoSigs:     true,
		Cluster: natsserver.ClusterOpts{
			Name: "parley-bench",
			Host: "127.0.0.1",
			Port: -1,
		},
		Routes: slices.Clone(routes),
	}
	s, err := natsserver.NewServer(opts)
	if err != nil {
		tb.Fatalf("nats server %d: %v", i, err)
	}
	s.Start()
	tb.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		tb.Fatalf("nats server %d not ready", i)
	}
	return s
}

func routeURL(s *natsserver.Server) *url.URL {
	return &url.URL{Scheme: "nats-route", Host: s.ClusterAddr().String()}
}

// baseSubs maps each server from startCluster to the subscriptions its
// global account holds before any client subscribes (the server's own
// internal ones), so that waits can count only the test's subscriptions.
var baseSubs sync.Map // *natsserver.Server -> int

// clientSubs is how many subscriptions server s holds for clients, its own
// and those its routes announced, beyond its internal ones.
func clientSubs(s *natsserver.Server) int {
	base, _ := baseSubs.Load(s)
	n, _ := base.(int)
	return s.GlobalAccount().TotalSubs() - n
}

// connect opens a client to one server over loopback TCP.
func connect(tb testing.TB, url string) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, nats.NoReconnect(), nats.Name("natsbench"))
	if err != nil {
		tb.Fatalf("connect %s: %v", url, err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(tb testing.TB, timeout time.Duration, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// cpuTime is the user+system CPU time this process has used so far: servers,
// clients and handlers together.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// percentile returns the p-th percentile (0..1) of samples, sorting them.
func percentile(samples []time.Duration, p float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	sort.Slice(samples, func(i, j int) bool { return samples[i] < samples[j] })
	i := int(p * float64(len(samples)-1))
	return samples[i]
}

func reportLatency(b *testing.B, samples []time.Duration) {
	b.ReportMetric(float64(percentile(samples, 0.50))/1e3, "p50-µs")
	b.ReportMetric(float64(percentile(samples, 0.99))/1e3, "p99-µs")
}

// TestClusterRoutes is the smoke test for startCluster: a message published
// on the first server reaches a subscriber on the last one.
func TestClusterRoutes(t *testing.T) {
	srv := startCluster(t, 3)
	a := connect(t, srv[0].ClientURL())
	c := connect(t, srv[2].ClientURL())
	sub, err := c.SubscribeSync("parley.node.c.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, func() bool {
		return srv[0].GlobalAccount().SubscriptionInterest("parley.node.c.u.x")
	}, "interest on A")
	if err := a.Publish("parley.node.c.u.x", []byte("hi")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg.Data) != "hi" {
		t.Fatalf("got %q", msg.Data)
	}
}
