package natsbench

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Subjects under test. userSubject uses a 17-character user id, about the
// size of Parley's ids; subject length is part of the per-subscription cost.
const (
	subjBroadcast = "parley.bcast"
	subjRegistry  = "parley.reg"
)

func userSubject(i int) string    { return fmt.Sprintf("parley.u.user-%012d", i) }
func nodeSubject(node int) string { return "parley.node." + strconv.Itoa(node) + ".>" }
func nodeUserSubject(node, user int) string {
	return fmt.Sprintf("parley.node.%d.u.user-%012d", node, user)
}

// inFlight bounds unacknowledged publishes in throughput runs so that the
// servers never flag a subscriber as a slow consumer.
const inFlight = 4096

// waitInterest waits until server s routes subject to some subscriber.
func waitInterest(tb testing.TB, s *natsserver.Server, subject string) {
	tb.Helper()
	waitFor(tb, 10*time.Second, func() bool {
		return s.GlobalAccount().SubscriptionInterest(subject)
	}, "interest in "+subject)
}

// counter subscribes subject on nc and counts what arrives.
func counter(tb testing.TB, nc *nats.Conn, subject string) *atomic.Int64 {
	tb.Helper()
	var n atomic.Int64
	sub, err := nc.Subscribe(subject, func(*nats.Msg) { n.Add(1) })
	if err != nil {
		tb.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return &n
}

// signal subscribes subject on nc; every message arriving sends on the
// returned channel.
func signal(tb testing.TB, nc *nats.Conn, subject string) chan struct{} {
	tb.Helper()
	ch := make(chan struct{}, 1)
	if _, err := nc.Subscribe(subject, func(*nats.Msg) { ch <- struct{}{} }); err != nil {
		tb.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		tb.Fatal(err)
	}
	return ch
}

func minCount(cs []*atomic.Int64) int64 {
	m := cs[0].Load()
	for _, c := range cs[1:] {
		m = min(m, c.Load())
	}
	return m
}

// runThroughput publishes b.N copies of payload on subject from pub and
// waits until every counter has seen all of them. It reports delivered
// messages per second per subscriber and process CPU per published message.
func runThroughput(b *testing.B, pub *nats.Conn, subject string, payload []byte, counters []*atomic.Int64) {
	b.Helper()
	base := make([]int64, len(counters))
	for i, c := range counters {
		base[i] = c.Load()
	}
	received := func() int64 {
		m := int64(-1)
		for i, c := range counters {
			v := c.Load() - base[i]
			if m < 0 || v < m {
				m = v
			}
		}
		return m
	}
	cpu0 := cpuTime()
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		for int64(i)-received() > inFlight {
			time.Sleep(20 * time.Microsecond)
		}
		if err := pub.Publish(subject, payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for received() < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("received %d of %d", received(), b.N)
		}
		time.Sleep(20 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/msg")
}

// runLatency publishes one message at a time and waits for every waiter to
// signal before the next, reporting the latency to the last receiver.
func runLatency(b *testing.B, pub *nats.Conn, subject string, payload []byte, waiters []chan struct{}) {
	b.Helper()
	samples := make([]time.Duration, 0, b.N)
	timeout := time.NewTimer(time.Hour)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := pub.Publish(subject, payload); err != nil {
			b.Fatal(err)
		}
		for _, w := range waiters {
			timeout.Reset(10 * time.Second)
			select {
			case <-w:
			case <-timeout.C:
				b.Fatal("message lost")
			}
		}
		samples = append(samples, time.Since(start))
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkUserSubjectPropagation: a gateway on server A subscribes a new
// parley.u.<user> subject; how long until a message published on server C
// reaches it. C publishes every ~20 µs until the message arrives, so the
// number is an upper bound with that resolution.
func BenchmarkUserSubjectPropagation(b *testing.B) {
	srv := startCluster(b, 3)
	a := connect(b, srv[0].ClientURL())
	c := connect(b, srv[2].ClientURL())
	ch := make(chan *nats.Msg, 1<<14)
	tick := time.NewTimer(time.Hour)
	samples := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		subj := "parley.u.prop-" + strconv.Itoa(i)
		start := time.Now()
		sub, err := a.ChanSubscribe(subj, ch)
		if err != nil {
			b.Fatal(err)
		}
	poll:
		for {
			if err := c.Publish(subj, nil); err != nil {
				b.Fatal(err)
			}
			tick.Reset(20 * time.Microsecond)
			for {
				select {
				case m := <-ch:
					if m.Subject != subj {
						continue // a late copy from an earlier iteration
					}
					samples = append(samples, time.Since(start))
					break poll
				case <-tick.C:
					if time.Since(start) > 10*time.Second {
						b.Fatal("interest never propagated")
					}
					continue poll
				}
			}
		}
		if err := sub.Unsubscribe(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportLatency(b, samples)
}

// BenchmarkUserSubjectChurn: one client on A subscribes and unsubscribes
// distinct parley.u.<user> subjects (a connect and a disconnect each); the
// clock stops only once servers B and C are back to their starting
// subscription count, so interest propagation is included.
func BenchmarkUserSubjectChurn(b *testing.B) {
	srv := startCluster(b, 3)
	a := connect(b, srv[0].ClientURL())
	base := make([]int, len(srv))
	for i, s := range srv {
		base[i] = s.GlobalAccount().TotalSubs()
	}
	// One channel for every subscription, as a gateway would use: a
	// SubscribeSync would allocate a 64k-slot channel per subject.
	ch := make(chan *nats.Msg, 1024)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		sub, err := a.ChanSubscribe(userSubject(i), ch)
		if err != nil {
			b.Fatal(err)
		}
		if err := sub.Unsubscribe(); err != nil {
			b.Fatal(err)
		}
	}
	// A sentinel subscription proves B and C have applied everything
	// before it: routes deliver interest changes in order.
	if _, err := a.ChanSubscribe("parley.u.sentinel", ch); err != nil {
		b.Fatal(err)
	}
	for _, s := range srv[1:] {
		waitInterest(b, s, "parley.u.sentinel")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	for i, s := range srv {
		if got := s.GlobalAccount().TotalSubs(); got != base[i]+1 {
			b.Fatalf("server %d has %d subscriptions, want %d", i, got, base[i]+1)
		}
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sub+unsub/s")
}

// BenchmarkNodeSubject1to1: one parley.node.<id>.> subscription per
// gateway; a 1:1 message published on A to the gateway on C that holds the
// recipient.
func BenchmarkNodeSubject1to1(b *testing.B) {
	payload := samplePayload()
	b.Run("latency", func(b *testing.B) {
		srv := startCluster(b, 3)
		a := connect(b, srv[0].ClientURL())
		c := connect(b, srv[2].ClientURL())
		w := signal(b, c, nodeSubject(2))
		waitInterest(b, srv[0], nodeUserSubject(2, 42))
		runLatency(b, a, nodeUserSubject(2, 42), payload, []chan struct{}{w})
	})
	b.Run("throughput", func(b *testing.B) {
		srv := startCluster(b, 3)
		a := connect(b, srv[0].ClientURL())
		c := connect(b, srv[2].ClientURL())
		n := counter(b, c, nodeSubject(2))
		waitInterest(b, srv[0], nodeUserSubject(2, 42))
		runThroughput(b, a, nodeUserSubject(2, 42), payload, []*atomic.Int64{n})
	})
}

// BenchmarkBroadcast: today's design. A message published once on A reaches
// one parley.bcast subscription per gateway (subs=3: on A, B and C) or, for
// comparison, a single subscriber on C (subs=1).
func BenchmarkBroadcast(b *testing.B) {
	payload := samplePayload()
	for _, subs := range []int{1, 3} {
		setup := func(b *testing.B) (*natsserver.Server, *nats.Conn, []*nats.Conn) {
			srv := startCluster(b, 3)
			pub := connect(b, srv[0].ClientURL())
			var gws []*nats.Conn
			for i := 3 - subs; i < 3; i++ {
				gws = append(gws, connect(b, srv[i].ClientURL()))
			}
			return srv[0], pub, gws
		}
		b.Run(fmt.Sprintf("latency/subs=%d", subs), func(b *testing.B) {
			origin, pub, gws := setup(b)
			var ws []chan struct{}
			for _, gw := range gws {
				ws = append(ws, signal(b, gw, subjBroadcast))
			}
			waitSubs(b, origin, len(gws))
			runLatency(b, pub, subjBroadcast, payload, ws)
		})
		b.Run(fmt.Sprintf("throughput/subs=%d", subs), func(b *testing.B) {
			origin, pub, gws := setup(b)
			var cs []*atomic.Int64
			for _, gw := range gws {
				cs = append(cs, counter(b, gw, subjBroadcast))
			}
			waitSubs(b, origin, len(gws))
			runThroughput(b, pub, subjBroadcast, payload, cs)
		})
	}
}

// waitSubs waits until server s knows want client subscriptions: its own
// clients' plus the interest its routes have announced.
func waitSubs(tb testing.TB, s *natsserver.Server, want int) {
	tb.Helper()
	waitFor(tb, 30*time.Second, func() bool {
		return clientSubs(s) >= want
	}, fmt.Sprintf("%d subscriptions on %s", want, s.Name()))
}

// BenchmarkRegistryUpdate estimates the user→node registry that per-node
// subjects need: every connect or disconnect is one update published on A
// and applied to a map on each of the 3 gateways.
func BenchmarkRegistryUpdate(b *testing.B) {
	srv := startCluster(b, 3)
	pub := connect(b, srv[0].ClientURL())
	var cs []*atomic.Int64
	for i := range 3 {
		gw := connect(b, srv[i].ClientURL())
		registry := make(map[string]uint16) // owned by this subscription's goroutine
		var n atomic.Int64
		sub, err := gw.Subscribe(subjRegistry, func(m *nats.Msg) {
			if len(m.Data) < 2 {
				return
			}
			if m.Data[0] == '+' {
				registry[string(m.Data[2:])] = uint16(m.Data[1])
			} else {
				delete(registry, string(m.Data[2:]))
			}
			n.Add(1)
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			b.Fatal(err)
		}
		if err := gw.Flush(); err != nil {
			b.Fatal(err)
		}
		cs = append(cs, &n)
	}
	waitSubs(b, srv[0], 3)
	runThroughput(b, pub, subjRegistry, []byte("+\x02user-000000000042"), cs)
}

// BenchmarkRoomFanout: one message to a 10,000-member room whose members are
// spread evenly over 3 gateways. per-user publishes 10,000 NATS messages
// (one per member subject); per-node publishes 3 (one per gateway);
// broadcast publishes 1 that reaches 3 gateways. Local fan-out to sockets is
// the same in every design and is not included.
func BenchmarkRoomFanout(b *testing.B) {
	const members = 10000
	payload := samplePayload()

	type design struct {
		name      string
		subjects  func(gw int) []string // what gateway gw subscribes
		publishes []string              // what one room message publishes
	}
	var perUser [3][]string
	for i := range members {
		perUser[i%3] = append(perUser[i%3], userSubject(i))
	}
	var allUsers []string
	for i := range members {
		allUsers = append(allUsers, userSubject(i))
	}
	designs := []design{
		{"per-user", func(gw int) []string { return perUser[gw] }, allUsers},
		{"per-node", func(gw int) []string { return []string{nodeSubject(gw)} },
			[]string{"parley.node.0.room", "parley.node.1.room", "parley.node.2.room"}},
		{"broadcast", func(int) []string { return []string{subjBroadcast} }, []string{subjBroadcast}},
	}
	for _, d := range designs {
		b.Run(d.name, func(b *testing.B) {
			srv := startCluster(b, 3)
			pub := connect(b, srv[0].ClientURL())
			// received counts NATS messages on all gateways; the one that
			// reaches target signals reached.
			var received, target atomic.Int64
			reached := make(chan struct{}, 1)
			subs := 0
			for gw := range 3 {
				nc := connect(b, srv[gw].ClientURL())
				// One channel per gateway, drained by one goroutine that the
				// cleanup stops and waits for.
				ch := make(chan *nats.Msg, 2*members)
				done := make(chan struct{})
				var wg sync.WaitGroup
				wg.Go(func() {
					for {
						select {
						case <-ch:
							if received.Add(1) == target.Load() {
								select {
								case reached <- struct{}{}:
								case <-done:
									return
								}
							}
						case <-done:
							return
						}
					}
				})
				b.Cleanup(func() { close(done); wg.Wait() })
				for _, s := range d.subjects(gw) {
					if _, err := nc.ChanSubscribe(s, ch); err != nil {
						b.Fatal(err)
					}
					subs++
				}
				if err := nc.Flush(); err != nil {
					b.Fatal(err)
				}
			}
			waitSubs(b, srv[0], subs)
			perMsg := int64(len(d.publishes))
			if d.name == "broadcast" {
				perMsg = 3
			}
			var pubTime time.Duration
			timeout := time.NewTimer(time.Hour)
			cpu0 := cpuTime()
			b.ResetTimer()
			for i := range b.N {
				target.Store(int64(i+1) * perMsg)
				start := time.Now()
				for _, s := range d.publishes {
					if err := pub.Publish(s, payload); err != nil {
						b.Fatal(err)
					}
				}
				if err := pub.Flush(); err != nil {
					b.Fatal(err)
				}
				pubTime += time.Since(start)
				timeout.Reset(30 * time.Second)
				select {
				case <-reached:
				case <-timeout.C:
					b.Fatalf("received %d of %d", received.Load(), target.Load())
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(pubTime.Microseconds())/float64(b.N), "publish-µs/op")
			b.ReportMetric(float64(cpuTime()-cpu0)/1e3/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(perMsg)/3, "natsmsgs/gateway")
		})
	}
}
