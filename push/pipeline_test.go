package push

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startJetStream starts a real NATS server with JetStream on loopback.
func startJetStream(t *testing.T) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(), JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 256 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(5 * time.Second) {
		t.Fatal("nats not ready")
	}
	return ns
}

func connect(t *testing.T, ns *natsserver.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// scripted is a Provider whose answers the test scripts per token: a queue
// of results, then Sent. It is the provider boundary, not our code: the
// APNs and FCM senders are tested against their stand-in servers.
type scripted struct {
	mu      sync.Mutex
	answers map[string][]Result
	calls   map[string][]time.Time
}

func newScripted() *scripted {
	return &scripted{answers: map[string][]Result{}, calls: map[string][]time.Time{}}
}

func (s *scripted) Name() string { return "scripted" }

func (s *scripted) Send(_ context.Context, n *Notification) Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[n.Token] = append(s.calls[n.Token], time.Now())
	if q := s.answers[n.Token]; len(q) > 0 {
		s.answers[n.Token] = q[1:]
		return q[0]
	}
	return Result{Outcome: Sent, Status: 200}
}

func (s *scripted) count(token string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls[token])
}

func (s *scripted) times(token string) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.calls[token]...)
}

// planner plans one target per device token listed for the job's user.
type planner struct {
	mu      sync.Mutex
	devices map[string][]string // user → tokens
	waits   []time.Duration     // answered, in order, before any target
	block   chan struct{}       // if set, Plan waits for it
	planned atomic.Int64
	dropped []string
}

func (p *planner) Plan(ctx context.Context, j Job) ([]Target, time.Duration, error) {
	p.planned.Add(1)
	if p.block != nil {
		select {
		case <-p.block:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.waits) > 0 {
		w := p.waits[0]
		p.waits = p.waits[1:]
		return nil, w, nil
	}
	var out []Target
	for _, tok := range p.devices[j.User] {
		out = append(out, Target{Device: "dev-" + tok, N: Notification{ID: j.ID(), Token: tok, Platform: IOS, Topic: "app", CollapseID: j.Conv}})
	}
	return out, 0, nil
}

func (p *planner) HasDevices(_ context.Context, user string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.devices[user]) > 0
}

func (p *planner) DropToken(_ context.Context, _, _, token string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropped = append(p.dropped, token)
	return nil
}

func startPipeline(t *testing.T, nc *nats.Conn, prov Provider, pl Planner, mods ...func(*Config)) *Pipeline {
	t.Helper()
	cfg := Config{NATS: nc, Providers: map[Platform]Provider{IOS: prov}, Planner: pl,
		AckWait: 2 * time.Second, SendTimeout: time.Second, MaxBytes: 32 << 20, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, m := range mods {
		m(&cfg)
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// enqueue queues one job.
func enqueue(p *Pipeline, j Job) { p.EnqueueMessage([]string{j.User}, "", j.Conv, j.Seq, j.At) }

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPipelineSendsOnceAndDedupesJobs(t *testing.T) {
	ns := startJetStream(t)
	prov := newScripted()
	pl := &planner{devices: map[string][]string{"bob": {"tok-phone", "tok-tablet"}}}
	p := startPipeline(t, connect(t, ns), prov, pl)
	j := Job{User: "bob", Conv: "dm:a:b", Seq: 1, At: time.Now().UnixMilli()}
	enqueue(p, j)
	enqueue(p, j) // the same job twice: stored once
	waitFor(t, 5*time.Second, "both devices pushed", func() bool { return prov.count("tok-phone") == 1 && prov.count("tok-tablet") == 1 })
	time.Sleep(300 * time.Millisecond)
	if prov.count("tok-phone") != 1 || pl.planned.Load() != 1 {
		t.Fatalf("phone pushed %d times, job planned %d times", prov.count("tok-phone"), pl.planned.Load())
	}
}

// A 429 with Retry-After for one device: the job comes back after that
// long, and only the device not yet served is sent to again.
func TestPipelineRetryHonoursRetryAfter(t *testing.T) {
	ns := startJetStream(t)
	prov := newScripted()
	prov.answers["tok-b"] = []Result{{Outcome: Retry, Status: 429, Reason: "TooManyRequests", RetryAfter: 1500 * time.Millisecond}}
	pl := &planner{devices: map[string][]string{"u": {"tok-a", "tok-b"}}}
	p := startPipeline(t, connect(t, ns), prov, pl)
	enqueue(p, Job{User: "u", Conv: "c", Seq: 7})
	waitFor(t, 10*time.Second, "the retried device pushed", func() bool { return prov.count("tok-b") == 2 })
	ts := prov.times("tok-b")
	if gap := ts[1].Sub(ts[0]); gap < 1400*time.Millisecond {
		t.Fatalf("retried after %v, Retry-After said 1.5 s", gap)
	}
	if prov.count("tok-a") != 1 {
		t.Fatalf("device already served was pushed %d times", prov.count("tok-a"))
	}
}

func TestPipelineDropsInvalidTokens(t *testing.T) {
	ns := startJetStream(t)
	prov := newScripted()
	prov.answers["dead"] = []Result{{Outcome: InvalidToken, Status: 410, Reason: "Unregistered"}}
	prov.answers["bad-payload"] = []Result{{Outcome: Rejected, Status: 400, Reason: "PayloadEmpty"}}
	pl := &planner{devices: map[string][]string{"u": {"dead", "bad-payload"}}}
	p := startPipeline(t, connect(t, ns), prov, pl)
	enqueue(p, Job{User: "u", Conv: "c", Seq: 1})
	waitFor(t, 5*time.Second, "the dead token dropped", func() bool {
		pl.mu.Lock()
		defer pl.mu.Unlock()
		return len(pl.dropped) == 1 && pl.dropped[0] == "dead"
	})
	time.Sleep(500 * time.Millisecond)
	if prov.count("bad-payload") != 1 || prov.count("dead") != 1 {
		t.Fatalf("a rejected or dead push was retried: %d %d", prov.count("bad-payload"), prov.count("dead"))
	}
}

// Devices online and unconfirmed: the planner asks to look again later; the
// job comes back after that wait.
func TestPipelineWaits(t *testing.T) {
	ns := startJetStream(t)
	prov := newScripted()
	pl := &planner{devices: map[string][]string{"u": {"t"}}, waits: []time.Duration{800 * time.Millisecond}}
	p := startPipeline(t, connect(t, ns), prov, pl)
	start := time.Now()
	enqueue(p, Job{User: "u", Conv: "c", Seq: 1})
	waitFor(t, 5*time.Second, "the push after the wait", func() bool { return prov.count("t") == 1 })
	if took := time.Since(start); took < 750*time.Millisecond {
		t.Fatalf("pushed after %v, before the 800 ms wait", took)
	}
}

// A node killed between dequeue and send: the job comes back to another
// node after AckWait and is sent exactly once.
func TestPipelineNodeKilledBetweenDequeueAndSend(t *testing.T) {
	ns := startJetStream(t)
	prov := newScripted()
	stuck := &planner{devices: map[string][]string{"u": {"t"}}, block: make(chan struct{})}
	ncA := connect(t, ns)
	a := startPipeline(t, ncA, prov, stuck)
	enqueue(a, Job{User: "u", Conv: "c", Seq: 1})
	waitFor(t, 5*time.Second, "node A to take the job", func() bool { return stuck.planned.Load() == 1 })
	ncA.Close() // node A dies holding the job, before sending
	healthy := &planner{devices: map[string][]string{"u": {"t"}}}
	startPipeline(t, connect(t, ns), prov, healthy)
	waitFor(t, 10*time.Second, "node B to send it", func() bool { return prov.count("t") == 1 })
	close(stuck.block) // A's planner returns; its node is gone
	time.Sleep(2500 * time.Millisecond)
	if n := prov.count("t"); n != 1 {
		t.Fatalf("sent %d times, want exactly once", n)
	}
}

// The queue is durable: a job queued while the provider is failing survives
// a restart of the NATS server (JetStream's files) and of the node, and is
// sent once afterwards.
func TestPipelineSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	start := func() *natsserver.Server {
		ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
			JetStream: true, StoreDir: dir, JetStreamMaxMemory: 64 << 20, JetStreamMaxStore: 256 << 20})
		if err != nil {
			t.Fatal(err)
		}
		ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			t.Fatal("nats not ready")
		}
		return ns
	}
	ns := start()
	down := newScripted()
	for i := 0; i < 10; i++ {
		down.answers["t"] = append(down.answers["t"], Result{Outcome: Retry, Status: 503, RetryAfter: 5 * time.Second})
	}
	pl := &planner{devices: map[string][]string{"u": {"t"}}}
	nc := connect(t, ns)
	p := startPipeline(t, nc, down, pl)
	enqueue(p, Job{User: "u", Conv: "c", Seq: 9})
	waitFor(t, 5*time.Second, "the first, failed attempt", func() bool { return down.count("t") == 1 })
	p.Close()
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()

	ns = start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	up := newScripted()
	startPipeline(t, connect(t, ns), up, &planner{devices: map[string][]string{"u": {"t"}}})
	waitFor(t, 20*time.Second, "the job after the restart", func() bool { return up.count("t") == 1 })
	time.Sleep(500 * time.Millisecond)
	if n := up.count("t"); n != 1 {
		t.Fatalf("sent %d times after the restart", n)
	}
}
