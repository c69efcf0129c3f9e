package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/hub"
	"github.com/parley-im/parley/internal/cluster"
	"github.com/parley-im/parley/internal/node"
	"github.com/parley-im/parley/protocol"
)

// Cluster timings for tests: a node silent for testNodeTimeout is dead, so
// a crashed node's users go offline within testNodeTimeout plus half a
// heartbeat.
const (
	testHeartbeat   = 100 * time.Millisecond
	testNodeTimeout = 600 * time.Millisecond
)

// testCluster is three gateways on a three-server NATS cluster.
type testCluster struct {
	t   *testing.T
	c   *cluster.Cluster
	key []byte
}

func startCluster(t *testing.T, mods ...func(*node.Config)) *testCluster {
	t.Helper()
	dir := t.TempDir()
	tmpl := node.Config{
		Dev:              "true",
		PresenceCoalesce: 50 * time.Millisecond,
		DrainTimeout:     5 * time.Second,
		NodeHeartbeat:    testHeartbeat,
		NodeTimeout:      testNodeTimeout,
		Gateway: gateway.Config{
			DrainInterval: 10 * time.Millisecond,
			DrainJitter:   200 * time.Millisecond,
			FrameRate:     100000, FrameBurst: 100000,
			UserRate: 100000, UserBurst: 100000,
		},
	}
	for _, m := range mods {
		m(&tmpl)
	}
	c, err := cluster.Start(cluster.Config{DataDir: dir, Node: tmpl, Logger: quiet(t)})
	if err != nil {
		t.Fatalf("start cluster: %v", err)
	}
	t.Cleanup(c.Close)
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	tc := &testCluster{t: t, c: c, key: key}
	tc.waitNodes("every node to see the cluster") // before the test starts
	return tc
}

// waitNodes waits until every gateway hears every gateway.
func (tc *testCluster) waitNodes(what string) {
	tc.t.Helper()
	waitUntil(tc.t, 10*time.Second, what, func() bool {
		for i := 0; i < tc.c.Nodes(); i++ {
			if len(tc.c.Node(i).Hub().Nodes()) != tc.c.Nodes() {
				return false
			}
		}
		return true
	})
}

func (tc *testCluster) token(user, device string) string {
	return mint(tc.t, tc.key, user, device, time.Hour)
}

// dial connects user/device to gateway i.
func (tc *testCluster) dial(i int, user, device string) *client.Conn {
	tc.t.Helper()
	return dialURL(tc.t, tc.c.URL(i), tc.token(user, device))
}

// dialAny connects user/device to the first gateway from i on that takes
// it (a client behind a load balancer), returning the gateway's index.
func (tc *testCluster) dialAny(ctx context.Context, i int, user, device string) (*client.Conn, int, error) {
	urls := tc.c.URLs()
	var last error
	for k := 0; k < len(urls); k++ {
		j := (i + k) % len(urls)
		dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := client.Dial(dctx, client.Options{URL: urls[j], Token: tc.token(user, device)})
		cancel()
		if err == nil {
			tc.t.Cleanup(func() { _ = c.CloseNow() })
			return c, j, nil
		}
		last = err
	}
	return nil, -1, last
}

// nextOf reads events until one matches, or fails the test.
func nextOf[T any](t *testing.T, ctx context.Context, c *client.Conn, what string, decode func(client.Event) (T, error), match func(T) bool) T {
	t.Helper()
	for {
		ev, err := c.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		v, err := decode(ev)
		if err == nil && match(v) {
			return v
		}
	}
}

// Three gateways: 1:1, group, receipts, typing and presence cross nodes,
// and the devices of one user on different nodes all get every message.
func TestClusterAcrossNodes(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 30*time.Second)
	alice := tc.dial(0, "alice", "phone")
	bobPhone := tc.dial(1, "bob", "phone")
	bobLaptop := tc.dial(2, "bob", "laptop")
	carol := tc.dial(2, "carol", "phone")

	// 1:1 from node 1 reaches both of bob's devices on nodes 2 and 3.
	ack, err := alice.SendTo(ctx, "bob", "a-1", "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{bobPhone, bobLaptop} {
		m := nextOf(t, ctx, c, "the 1:1 message", client.Event.Message, func(m protocol.Message) bool { return m.CMID == "a-1" })
		if m.Seq != ack.Seq || m.Conv != ack.Conv || m.From != "alice" {
			t.Fatalf("got %+v, want seq %d of %s", m, ack.Seq, ack.Conv)
		}
	}

	// A group created on node 3; a message from node 2 reaches nodes 1 and 3.
	g, err := carol.Create(ctx, "trio", []string{"alice", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	gack, err := bobPhone.Send(ctx, g.ID, "b-1", "hello all")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Conn{alice, carol, bobLaptop} {
		m := nextOf(t, ctx, c, "the group message", client.Event.Message, func(m protocol.Message) bool { return m.CMID == "b-1" })
		if m.Seq != gack.Seq {
			t.Fatalf("group message seq %d, want %d", m.Seq, gack.Seq)
		}
	}

	// Read receipt from node 2 reaches the sender on node 1.
	if err := bobPhone.Receipt(ctx, ack.Conv, "read", ack.Seq); err != nil {
		t.Fatal(err)
	}
	nextOf(t, ctx, alice, "bob's read receipt", client.Event.Receipt, func(r protocol.Receipt) bool {
		return r.User == "bob" && r.Kind == "read" && r.Seq == ack.Seq
	})
	// Typing from node 3 reaches node 1 (and not the typist's own devices).
	if err := carol.Typing(ctx, g.ID, "start"); err != nil {
		t.Fatal(err)
	}
	nextOf(t, ctx, alice, "carol typing", client.Event.Typing, func(ty protocol.Typing) bool { return ty.User == "carol" })

	// Presence: alice on node 1 watches bob, whose devices are on nodes 2
	// and 3; the watch reply is the cluster-wide state.
	waitUntil(t, 5*time.Second, "bob online with both devices, seen from node 1", func() bool {
		res, err := alice.Watch(ctx, []string{"bob"})
		return err == nil && len(res.Presence) == 1 && res.Presence[0].Online && slices.Equal(res.Presence[0].Devices, []string{"laptop", "phone"})
	})
	_ = bobLaptop.Close()
	p := nextOf(t, ctx, alice, "bob's laptop leaving", client.Event.Presence, func(p protocol.Presence) bool {
		return p.User == "bob" && slices.Equal(p.Devices, []string{"phone"})
	})
	if !p.Online || p.Epoch == 0 {
		t.Fatalf("presence %+v: want online with an epoch", p)
	}
	_ = bobPhone.Close()
	p = nextOf(t, ctx, alice, "bob offline", client.Event.Presence, func(p protocol.Presence) bool { return p.User == "bob" && !p.Online })
	if p.LastSeen == 0 {
		t.Fatalf("offline presence without last_seen: %+v", p)
	}

	// The admin endpoint lists the cluster.
	resp, err := http.Get("http://" + tc.c.Node(0).AdminAddr() + "/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var info struct {
		Nodes []struct{ Name, Advertise string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || len(info.Nodes) != 3 || info.Nodes[0].Advertise == "" {
		t.Fatalf("GET /cluster: %+v %v", info, err)
	}
}

// Senders on different nodes post to one group at once: the store refuses
// a seq another node took, the loser retries after it, and every message
// gets its own seq with no gap.
func TestClusterConcurrentSeqs(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 60*time.Second)
	owner := tc.dial(0, "u0", "d")
	g, err := owner.Create(ctx, "race", []string{"u1", "u2"})
	if err != nil {
		t.Fatal(err)
	}
	const per = 60
	var wg sync.WaitGroup
	seqs := make([][]uint64, 3)
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		wg.Go(func() {
			c := tc.dial(i, fmt.Sprintf("u%d", i), "sender")
			for k := 0; k < per; k++ {
				ack, err := c.Send(ctx, g.ID, fmt.Sprintf("u%d-%d", i, k), "x")
				if err != nil {
					errs <- err
					return
				}
				seqs[i] = append(seqs[i], ack.Seq)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var all []uint64
	for i := range seqs {
		if !slices.IsSorted(seqs[i]) {
			t.Fatalf("sender %d's seqs out of order: %v", i, seqs[i])
		}
		all = append(all, seqs[i]...)
	}
	slices.Sort(all)
	first := all[0]
	for k, s := range all {
		if s != first+uint64(k) {
			t.Fatalf("seqs not gap-free and unique: %v", all)
		}
	}
	var conflicts float64
	for i := 0; i < 3; i++ {
		conflicts += metricAt(t, "http://"+tc.c.Node(i).AdminAddr(), "parley_seq_conflicts_total")
	}
	t.Logf("%d messages from 3 nodes, %v seq conflicts retried", len(all), conflicts)
}

// trafficRun is the delivery contract across nodes under a fault: senders
// and receiving devices spread over the gateways, the fault injected
// mid-traffic, clients on a lost gateway reconnecting to the others and
// resuming. In the end every device holds every acked message exactly
// once, gap-free, in the one order of the history.
type trafficRun struct {
	tc       *testCluster
	users    []string
	convs    []string
	members  map[string][]string
	mu       sync.Mutex
	acked    map[string]map[string]uint64 // conv → cmid → seq
	devices  []*device
	live     atomic.Int64 // messages received live
	resumed  atomic.Int64 // messages first learnt by sync after a reconnect
	reconns  atomic.Int64 // reconnects after a lost connection
	sendRetr atomic.Int64 // sends retried on another connection
}

func newTrafficRun(t *testing.T, tc *testCluster, ctx context.Context) *trafficRun {
	r := &trafficRun{tc: tc, users: []string{"ann", "ben", "cat"}, members: map[string][]string{}, acked: map[string]map[string]uint64{}}
	setup := tc.dial(0, "ann", "setup")
	g, err := setup.Create(ctx, "all", r.users[1:])
	if err != nil {
		t.Fatal(err)
	}
	r.convs = append(r.convs, g.ID)
	r.members[g.ID] = r.users
	for _, peer := range r.users[1:] {
		ack, err := setup.SendTo(ctx, peer, "hello-"+peer, "hi")
		if err != nil {
			t.Fatal(err)
		}
		r.convs = append(r.convs, ack.Conv)
		r.members[ack.Conv] = []string{"ann", peer}
		r.ack(ack.Conv, "hello-"+peer, ack.Seq)
	}
	_ = setup.Close()
	return r
}

func (r *trafficRun) ack(conv, cmid string, seq uint64) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.acked[conv] == nil {
		r.acked[conv] = map[string]uint64{}
	}
	if old, ok := r.acked[conv][cmid]; ok && old != seq {
		return fmt.Errorf("%s acked as %d and %d", cmid, old, seq)
	}
	r.acked[conv][cmid] = seq
	return nil
}

// run drives traffic and calls fault once a third of the sends are acked.
func (r *trafficRun) run(t *testing.T, ctx context.Context, perSender int, fault func()) {
	total := perSender * len(r.users)
	var sent atomic.Int64
	faulted := make(chan struct{})
	var faultOnce sync.Once
	errs := make(chan error, 64)
	var wg sync.WaitGroup
	for i, u := range r.users {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), 3))
			c, _, err := r.tc.dialAny(ctx, i, u, "sender")
			if err != nil {
				errs <- err
				return
			}
			for k := 0; k < perSender; k++ {
				time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond)
				conv := r.convs[0]
				if rng.IntN(2) == 0 {
					if u == "ann" {
						conv = r.convs[1+rng.IntN(2)]
					} else {
						conv = r.convs[i] // the 1:1 with ann
					}
				}
				cmid := fmt.Sprintf("%s-%d", u, k)
				for try := 0; ; try++ {
					ack, err := c.Send(ctx, conv, cmid, cmid)
					if err == nil {
						if err := r.ack(conv, cmid, ack.Seq); err != nil {
							errs <- err
						}
						break
					}
					if try > 10 || ctx.Err() != nil {
						errs <- fmt.Errorf("%s: %v", cmid, err)
						return
					}
					// The gateway went away: the same cmid again over a
					// new connection, wherever the balancer puts it.
					r.sendRetr.Add(1)
					_ = c.CloseNow()
					time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond)
					if c, _, err = r.tc.dialAny(ctx, i+try+1, u, "sender"); err != nil {
						errs <- err
						return
					}
				}
				if sent.Add(1) == int64(total/3) {
					faultOnce.Do(func() { fault(); close(faulted) })
				}
			}
		})
	}
	// Receivers: two devices per user on different gateways, live until
	// their connection is lost, then reconnecting elsewhere and resuming.
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for i, u := range r.users {
		for k, name := range []string{"phone", "laptop"} {
			d := &device{user: u, name: name, seen: map[string]map[uint64]string{}}
			r.devices = append(r.devices, d)
			rwg.Go(func() {
				start := i + k
				first := true
				for {
					c, j, err := r.tc.dialAny(ctx, start, d.user, d.name)
					if err != nil {
						errs <- err
						return
					}
					start = j + 1
					before := d.count()
					if err := d.catchUp(ctx, c); err != nil {
						errs <- err
						return
					}
					if !first {
						r.resumed.Add(int64(d.count() - before))
						r.reconns.Add(1)
					}
					first = false
					for lost := false; !lost; {
						select {
						case ev := <-c.Events():
							if m, err := ev.Message(); err == nil {
								r.live.Add(1)
								if err := d.add(m); err != nil {
									errs <- err
									return
								}
							}
						case <-c.Done():
							lost = true
						case <-stop:
							_ = c.CloseNow()
							return
						}
					}
				}
			})
		}
	}
	wg.Wait()
	// Before any final sync: every device must reach every acked message
	// on its own, live or by the resume that follows a lost connection (a
	// gateway whose NATS link was lost makes its clients resync).
	deadline := time.Now().Add(15 * time.Second)
	for !r.converged() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !r.converged() {
		errs <- errors.New("devices did not get every acked message without a final sync")
	}
	close(stop)
	rwg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	select {
	case <-faulted:
	default:
		t.Fatal("the fault never ran")
	}
}

// converged reports whether every device holds every acked message of its
// conversations.
func (r *trafficRun) converged() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, d := range r.devices {
		d.mu.Lock()
		for conv, acked := range r.acked {
			if !slices.Contains(r.members[conv], d.user) {
				continue
			}
			for cmid, seq := range acked {
				if d.seen[conv][seq] != cmid {
					d.mu.Unlock()
					return false
				}
			}
		}
		d.mu.Unlock()
	}
	return true
}

func (d *device) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, s := range d.seen {
		n += len(s)
	}
	return n
}

// verify resumes every device once more (through a live gateway) and
// checks the contract against the history.
func (r *trafficRun) verify(t *testing.T, ctx context.Context, via int) {
	for _, d := range r.devices {
		c := r.tc.dial(via, d.user, d.name+"-final")
		if err := d.catchUp(ctx, c); err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
	}
	hist := r.tc.dial(via, "ann", "audit")
	for _, conv := range r.convs {
		res, err := hist.History(ctx, conv, 0, 0, 1000)
		if err != nil {
			t.Fatal(err)
		}
		want := map[uint64]string{}
		count := map[string]int{}
		for i, m := range res.Messages {
			if m.Seq != uint64(i+1) {
				t.Fatalf("%s: history position %d has seq %d", conv, i, m.Seq)
			}
			want[m.Seq] = m.CMID
			count[m.CMID]++
		}
		for cmid, seq := range r.acked[conv] {
			if count[cmid] != 1 || want[seq] != cmid {
				t.Fatalf("%s: acked %s (seq %d) stored %d times", conv, cmid, seq, count[cmid])
			}
		}
		for _, d := range r.devices {
			if !slices.Contains(r.members[conv], d.user) {
				continue
			}
			got := d.seen[conv]
			if len(got) != len(want) {
				t.Fatalf("%s/%s has %d of %d messages of %s", d.user, d.name, len(got), len(want), conv)
			}
			for seq, cmid := range want {
				if got[seq] != cmid {
					t.Fatalf("%s/%s: seq %d of %s is %q, want %q", d.user, d.name, seq, conv, got[seq], cmid)
				}
			}
		}
	}
	t.Logf("live deliveries %d, messages recovered by resume %d over %d reconnects, sends retried %d",
		r.live.Load(), r.resumed.Load(), r.reconns.Load(), r.sendRetr.Load())
}

// Kill a gateway mid-traffic: its clients reconnect to the others and
// catch up; no acked message is lost or duplicated.
func TestClusterGatewayCrash(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	r := newTrafficRun(t, tc, ctx)
	r.run(t, ctx, 80, func() { tc.c.KillNode(1) })
	r.verify(t, ctx, 0)
	if r.reconns.Load() == 0 {
		t.Fatal("no receiver had to reconnect: the crash hit nobody")
	}
}

// Kill one NATS server of three mid-traffic: the gateway connected to it
// fails over to another and traffic continues; what was in flight on the
// lost link is recovered by resume (counted in the log line).
func TestClusterNATSServerCrash(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	r := newTrafficRun(t, tc, ctx)
	r.run(t, ctx, 80, func() { tc.c.KillNATS(1) })
	r.verify(t, ctx, 0)
	// Every gateway still hears the whole cluster.
	tc.waitNodes("three nodes after the NATS failover")
}

// SIGTERM on one gateway (drain): its clients get a bye with a jittered
// delay, move to the others, and nothing is lost.
func TestClusterDrain(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	r := newTrafficRun(t, tc, ctx)
	var byes atomic.Int64
	probe := tc.dial(1, "ann", "probe")
	r.run(t, ctx, 60, func() {
		go func() {
			_ = tc.c.DrainNode(context.Background(), 1)
		}()
		ce := waitClosed(t, ctx, probe, "a client of the drained gateway")
		if ce.Code != protocol.CloseShutdown {
			t.Errorf("drained client closed with %d, want %d", ce.Code, protocol.CloseShutdown)
		}
		byes.Add(1)
	})
	r.verify(t, ctx, 2)
	if byes.Load() != 1 || r.reconns.Load() == 0 {
		t.Fatalf("drain moved nobody: byes %d, reconnects %d", byes.Load(), r.reconns.Load())
	}
}

// Presence after a gateway crash: a user whose only device was on the
// crashed node goes offline for a watcher on another node within the
// documented bound; a user who reconnected to another node in time stays
// online, whatever the dead node's entries said.
func TestClusterPresenceAfterCrash(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 30*time.Second)
	watcher := tc.dial(0, "wendy", "phone")
	// Shared conversations make the users watchable.
	for _, u := range []string{"gone", "mover"} {
		if _, err := watcher.SendTo(ctx, u, "hi-"+u, "hi"); err != nil {
			t.Fatal(err)
		}
	}
	gone := tc.dial(1, "gone", "phone")
	mover := tc.dial(1, "mover", "phone")
	_, _ = gone, mover
	waitUntil(t, 5*time.Second, "both online, seen from node 1", func() bool {
		res, err := watcher.Watch(ctx, []string{"gone", "mover"})
		return err == nil && len(res.Presence) == 2 && res.Presence[0].Online && res.Presence[1].Online
	})
	killed := time.Now()
	tc.c.KillNode(1)
	// mover is back at once, on node 3.
	tc.dial(2, "mover", "phone")

	p := nextOf(t, ctx, watcher, "gone offline", client.Event.Presence, func(p protocol.Presence) bool { return p.User == "gone" && !p.Online })
	took := time.Since(killed)
	bound := testNodeTimeout + testHeartbeat/2 + 500*time.Millisecond // + scheduling slack
	t.Logf("offline after %v (timeout %v)", took.Round(time.Millisecond), testNodeTimeout)
	if took > bound {
		t.Fatalf("crashed node's user offline after %v, bound %v", took, bound)
	}
	if p.LastSeen == 0 {
		t.Fatal("no last_seen for the crashed node's user")
	}
	// Well past the timeout, mover is online (through node 3).
	time.Sleep(2 * testNodeTimeout)
	res, err := watcher.Watch(ctx, []string{"mover", "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Presence[0].Online || slices.Equal(res.Presence[0].Devices, nil) {
		t.Fatalf("mover after the dead node expired: %+v", res.Presence[0])
	}
	if res.Presence[1].Online {
		t.Fatalf("gone online again: %+v", res.Presence[1])
	}
	// The two live nodes agree.
	other := tc.dial(2, "wendy", "laptop")
	res2, err := other.Watch(ctx, []string{"mover", "gone"})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Presence[0].Online != res.Presence[0].Online || res2.Presence[1].Online != res.Presence[1].Online {
		t.Fatalf("nodes disagree: %+v vs %+v", res.Presence, res2.Presence)
	}
}

// A node that (re)joins learns who is online elsewhere from the others'
// snapshots, and they learn its users from its own.
func TestClusterPresenceSnapshotOnJoin(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 30*time.Second)
	w := tc.dial(0, "wendy", "phone")
	for _, u := range []string{"early", "late"} {
		if _, err := w.SendTo(ctx, u, "hi-"+u, "hi"); err != nil {
			t.Fatal(err)
		}
	}
	tc.dial(0, "early", "phone") // online on node 1 before node 2 restarts
	tc.c.KillNode(1)
	if err := tc.c.RestartNode(1); err != nil {
		t.Fatal(err)
	}
	tc.waitNodes("three nodes after the restart")
	// The restarted node's watcher sees node 1's user at once.
	w2 := tc.dial(1, "wendy", "laptop")
	waitUntil(t, 5*time.Second, "early online, seen from the restarted node", func() bool {
		res, err := w2.Watch(ctx, []string{"early"})
		return err == nil && res.Presence[0].Online
	})
	// And node 1 sees a user of the restarted node.
	tc.dial(1, "late", "phone")
	waitUntil(t, 5*time.Second, "late online, seen from node 1", func() bool {
		res, err := w.Watch(ctx, []string{"late"})
		return err == nil && res.Presence[0].Online
	})
	if n := metricAt(t, "http://"+tc.c.Node(1).AdminAddr(), "parley_presence_snapshots_total"); n < 2 {
		t.Fatalf("restarted node applied %v snapshots, want one per peer", n)
	}
}

// A gateway whose bus subscription overflows (a slow consumer) loses
// deliveries: it counts the drop and makes its clients reconnect and sync,
// so they still end with every message.
func TestClusterBusOverflow(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 2*time.Minute)
	// Gateway 2 restarts with a bus backlog of 2 KiB: every message larger
	// than that overflows it (a deterministic stand-in for a backlog that
	// outgrew the default limits).
	tc.c.KillNode(1)
	tc.c.SetNode(1, func(c *node.Config) { c.BusPendingBytes = 2 << 10 })
	if err := tc.c.RestartNode(1); err != nil {
		t.Fatal(err)
	}
	// The fault: messages on the bus that the backlog cannot hold
	// (anything on the subject will do; these are not even valid).
	nc, err := nats.Connect(tc.c.NATSURLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	r := newTrafficRun(t, tc, ctx)
	r.run(t, ctx, 80, func() {
		for i := 0; i < 20; i++ {
			_ = nc.Publish(hub.SubjectBroadcast, make([]byte, 4<<10))
		}
		_ = nc.Flush()
	})
	r.verify(t, ctx, 0)
	drops := metricAt(t, "http://"+tc.c.Node(1).AdminAddr(), `parley_nats_slow_consumer_total{subject="bus"}`)
	t.Logf("bus drop episodes on gateway 2: %v", drops)
	if drops == 0 {
		t.Fatal("the burst caused no drop on gateway 2")
	}
	if r.reconns.Load() == 0 {
		t.Fatal("bus dropped deliveries but no client was made to resync")
	}
}

// Live topics across nodes: a driver publishes on node 1 while nobody
// listens; a rider who subscribes on node 2 gets the last value at once
// (from node 1), then the next values live.
func TestClusterTopicLastValue(t *testing.T) {
	tc := startCluster(t)
	ctx := ctxT(t, 20*time.Second)
	driver := dialURL(t, tc.c.URL(0), mint(t, tc.key, "d42", "car", time.Hour, func(c *auth.Claims) {
		c.Topics.Pub = []string{"driver.{sub}.location"}
	}))
	for i := 1; i <= 3; i++ {
		if err := driver.Publish(ctx, "driver.d42.location", []byte(fmt.Sprintf(`{"n":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	rider := dialURL(t, tc.c.URL(1), mint(t, tc.key, "r1", "phone", time.Hour, func(c *auth.Claims) {
		c.Topics.Sub = []string{"driver.*.location"}
	}))
	if err := rider.Subscribe(ctx, "driver.d42.location"); err != nil {
		t.Fatal(err)
	}
	ev := nextOf(t, ctx, rider, "the last value", client.Event.TopicEvent, func(te client.TopicEvent) bool { return true })
	if string(ev.Data) != `{"n":3}` {
		t.Fatalf("first value %s, want the last one published, {\"n\":3}", ev.Data)
	}
	if err := driver.Publish(ctx, "driver.d42.location", []byte(`{"n":4}`)); err != nil {
		t.Fatal(err)
	}
	ev = nextOf(t, ctx, rider, "the next value", client.Event.TopicEvent, func(te client.TopicEvent) bool { return true })
	if string(ev.Data) != `{"n":4}` {
		t.Fatalf("next value %s, want {\"n\":4}", ev.Data)
	}
}
