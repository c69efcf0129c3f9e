package loadtest

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// coordinated is a coordinator and its agents running in goroutines,
// talking HTTP on loopback.
type coordinated struct {
	rep    *Report
	err    error
	agents []*Report
	errs   []error
}

// runDistributed runs cfg with a coordinator and n agents and waits for
// them all.
func runDistributed(t *testing.T, ctx context.Context, cfg Config, n int) coordinated {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cc := CoordinatorConfig{
		Listener: ln, Agents: n, Config: cfg, StartDelay: 200 * time.Millisecond,
		RegisterTimeout: 10 * time.Second, AgentTimeout: 5 * time.Second, Log: testWriter{t},
	}
	var out coordinated
	out.agents, out.errs = make([]*Report, n), make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// By goroutine: the coordinator numbers the agents in the
			// order they register (its report's Agents).
			out.agents[i], out.errs[i] = RunAgent(ctx, AgentConfig{Coordinator: "http://" + ln.Addr().String(), Name: "a", Log: testWriter{t}})
		}(i)
	}
	out.rep, out.err = RunCoordinator(ctx, cc)
	wg.Wait()
	for i, err := range out.errs {
		if err != nil {
			t.Errorf("agent goroutine %d: %v", i, err)
		}
	}
	return out
}

func TestDistributedIdle(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "idle")
	cfg.Conns = 60
	cfg.ConnectRate = 600
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	peak := make(chan int)
	go func() { // the server's own count while the connections are held
		p := 0
		for ctx.Err() == nil && p < 60 {
			p = max(p, n.Gateway().Connections())
			time.Sleep(10 * time.Millisecond)
		}
		peak <- p
	}()
	d := runDistributed(t, ctx, cfg, 3)
	if d.err != nil {
		t.Fatal(d.err)
	}
	if p := <-peak; p != 60 {
		t.Errorf("server saw at most %d connections, want 60", p)
	}
	r := d.rep
	if r.Conns != 60 || r.Connect == nil || r.Connect.OK != 60 || r.Connect.Attempted != 60 || r.Dropped != 0 {
		t.Fatalf("merged: conns %d connect %+v dropped %d", r.Conns, r.Connect, r.Dropped)
	}
	if got := metric(t, n, `parley_connects_total{result="ok"`); got != 60 {
		t.Errorf("server counted %v successful connects, want 60", got)
	}
	if len(r.Agents) != 3 {
		t.Fatalf("%d agent reports", len(r.Agents))
	}
	var sum int64
	for i, a := range r.Agents {
		if a == nil || a.Conns != 20 || a.Connect.OK != 20 {
			t.Fatalf("agent %d: %+v", i, a)
		}
		sum += a.Metrics[HistConnect].Count
	}
	if got := r.Metrics[HistConnect].Count; got != 60 || sum != 60 || r.Connect.Latency.Count != 60 {
		t.Errorf("merged connect count %d, agents' %d, connect stats %d; want 60", got, sum, r.Connect.Latency.Count)
	}
	if r.Server == nil || r.Server.Conns != 60 || r.Server.AfterKiB <= 0 {
		t.Errorf("merged server memory %+v", r.Server)
	}
	if r.Counters[CountConnOK] != 60 {
		t.Errorf("counters %v", r.Counters)
	}
	// The timeline adds up to the totals and saw all 60 open at once.
	var opened, peakOpen int64
	for _, iv := range r.Timeline {
		opened += iv.Counters[CountConnOK]
		peakOpen = max(peakOpen, iv.Gauges[GaugeOpen])
	}
	if opened != 60 || peakOpen != 60 {
		t.Errorf("timeline: %d opened, peak %d open, want 60 (%d rows)", opened, peakOpen, len(r.Timeline))
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings %q", r.Warnings)
	}
	logSummary(t, r)
}

func TestDistributedChat(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "chat")
	cfg.Conns = 10 // pairs
	cfg.Rate = 100
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := runDistributed(t, ctx, cfg, 2)
	if d.err != nil {
		t.Fatal(d.err)
	}
	c := d.rep.Chat
	if c == nil {
		t.Fatal("no chat stats")
	}
	var sent, acked, received, e2e int64
	for i, a := range d.rep.Agents {
		if a == nil || a.Chat == nil || a.Chat.Pairs != 5 {
			t.Fatalf("agent %d: %+v", i, a)
		}
		sent += a.Chat.Sent
		acked += a.Chat.Acked
		received += a.Chat.Received
		e2e += a.Chat.EndToEnd.Count
	}
	if c.Pairs != 10 || c.Sent != sent || c.Acked != acked || c.Received != received {
		t.Errorf("merged %+v, agents sent %d acked %d received %d", c, sent, acked, received)
	}
	// 100/s over 1.3 s: about 130 sends.
	if c.Sent < 120 || c.Sent > 140 || c.Acked != c.Sent || c.Received != c.Sent || c.Lost != 0 || c.Duplicated != 0 || c.Unacked != 0 {
		t.Errorf("chat %+v", c)
	}
	if c.EndToEnd.Count != e2e || d.rep.Metrics[HistE2E].Count != e2e || e2e == 0 {
		t.Errorf("merged e2e count %d (metrics %d), agents' %d", c.EndToEnd.Count, d.rep.Metrics[HistE2E].Count, e2e)
	}
	if got := metric(t, n, "parley_messages_sent_total"); got != float64(c.Sent) {
		t.Errorf("server stored %v messages, the agents sent %d", got, c.Sent)
	}
	if d.rep.Conns != 20 {
		t.Errorf("conns %d, want 20", d.rep.Conns)
	}
}

func TestDistributedFanout(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "fanout")
	cfg.Conns = 20 // subscribers
	cfg.Rate = 20
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := runDistributed(t, ctx, cfg, 2)
	if d.err != nil {
		t.Fatal(d.err)
	}
	f := d.rep.Fanout
	if f == nil {
		t.Fatal("no fanout stats")
	}
	logSummary(t, d.rep)
	// 20/s over 1.3 s: 26 publishes, 20 measured; only agent 0 publishes.
	if f.Published < 24 || f.Published > 28 || f.Measured < 18 || f.Measured > 22 {
		t.Errorf("published %d measured %d", f.Published, f.Measured)
	}
	if got := metric(t, n, "parley_topic_publishes_total"); got != float64(f.Published) {
		t.Errorf("server counted %v publishes, want %d", got, f.Published)
	}
	if a1 := d.rep.Agents[1]; a1 == nil || a1.Counters[CountSent] != 0 || a1.Conns != 10 {
		t.Errorf("agent 1 published or held the publisher: %+v", a1)
	}
	// The books add up across the agents.
	var received, expected int64
	for _, a := range d.rep.Agents {
		received += a.Fanout.Received
		expected += a.Fanout.Expected
	}
	if f.Subscribers != 20 || f.Expected != 20*f.Published || f.Expected != expected || f.Received != received ||
		f.Received+f.Coalesced+f.NotReceived != f.Expected || f.Duplicates != 0 {
		t.Errorf("delivery: subscribers %d expected %d (agents %d) received %d (agents %d) coalesced %d not received %d dup %d",
			f.Subscribers, f.Expected, expected, f.Received, received, f.Coalesced, f.NotReceived, f.Duplicates)
	}
	// One completion time per measured publish that reached every
	// subscriber of both agents.
	if f.LastMember.Count+f.Incomplete != f.Measured || d.rep.Metrics[HistFanoutLast].Count != f.LastMember.Count || f.FirstMember.Count != f.LastMember.Count {
		t.Errorf("last member %d (metrics %d), first %d, incomplete %d; measured %d",
			f.LastMember.Count, d.rep.Metrics[HistFanoutLast].Count, f.FirstMember.Count, f.Incomplete, f.Measured)
	}
	if f.LastMember.Count > 0 && (f.LastMember.Max > f.AllMembers.Max || f.FirstMember.P50 > f.LastMember.P50) {
		t.Errorf("all %+v last %+v first %+v", f.AllMembers, f.LastMember, f.FirstMember)
	}
	// Latest-value topics let a loaded server replace a value pending for a
	// subscriber with a newer one. If it replaced none, every subscriber
	// of both agents got every value, and every publish completed.
	if replaced := metric(t, n, "parley_queue_drops_total") + metric(t, n, "parley_queue_evictions_total"); replaced > 0 {
		t.Logf("the server replaced %v pending values (machine load): checked the books only", replaced)
	} else {
		for i, a := range d.rep.Agents {
			af := a.Fanout
			if af.Subscribers != 10 || af.MinPerSub != f.Published || af.MaxPerSub != f.Published {
				t.Errorf("agent %d: %d subscribers got %d..%d values, want %d each", i, af.Subscribers, af.MinPerSub, af.MaxPerSub, f.Published)
			}
		}
		if f.Received != f.Expected || f.Incomplete != 0 || f.LastMember.Count != f.Measured || f.AllMembers.Count != 20*f.Measured {
			t.Errorf("received %d of %d, %d incomplete, last member %d, all %d; measured %d",
				f.Received, f.Expected, f.Incomplete, f.LastMember.Count, f.AllMembers.Count, f.Measured)
		}
	}
	if d.rep.Conns != 21 {
		t.Errorf("conns %d, want 21", d.rep.Conns)
	}
}

func TestDistributedConnect(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "connect")
	cfg.Steps = []float64{50, 100}
	cfg.StepDuration = 500 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := runDistributed(t, ctx, cfg, 2)
	if d.err != nil {
		t.Fatal(d.err)
	}
	r := d.rep
	if len(r.Steps) != 2 || r.Steps[0].Attempted != 25 || r.Steps[1].Attempted != 50 || r.Steps[0].TargetRate != 50 || r.Steps[1].TargetRate != 100 {
		t.Fatalf("steps %+v", r.Steps)
	}
	if r.Steps[0].OK+r.Steps[1].OK != 75 || r.Conns != 75 || r.Metrics[HistConnect].Count != 75 {
		t.Errorf("ok %d+%d, conns %d, connect count %d; want 75", r.Steps[0].OK, r.Steps[1].OK, r.Conns, r.Metrics[HistConnect].Count)
	}
	// Each agent ran its share of every step at its share of the rate.
	for j, want := range []int{25, 50} {
		a0, a1 := r.Agents[0].Steps[j], r.Agents[1].Steps[j]
		if a0.Attempted+a1.Attempted != want || a0.Attempted < want/2-1 || a0.TargetRate+a1.TargetRate != cfg.Steps[j] {
			t.Errorf("step %d: agents %+v and %+v", j, a0, a1)
		}
	}
	if got := metric(t, n, `parley_connects_total{result="ok"`); got != 75 {
		t.Errorf("server counted %v connects, want 75", got)
	}
}

// TestMergeExact records random values split over three recorders, ships
// their intervals through the wire encoding to a coordinator, and checks
// that the merged distribution is exactly that of one histogram fed every
// value.
func TestMergeExact(t *testing.T) {
	const agents = 3
	c, err := newCoordinator(CoordinatorConfig{Listen: "unused", Agents: agents, Config: Config{URL: "ws://x", Key: []byte("k"), Scenario: "chat", Conns: 3}})
	if err != nil {
		t.Fatal(err)
	}
	c.startAt = time.Now()
	for i := 0; i < agents; i++ {
		c.agents = append(c.agents, &agentState{name: "t", seqs: map[int]bool{},
			hists: map[string]*hdrhistogram.Histogram{}, counters: map[string]int64{}, gauges: map[string]int64{}})
	}
	all := newLatency()
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]*Recorder, agents)
	seq := make([]int, agents)
	for i := range recs {
		recs[i] = NewRecorder(c.startAt)
		recs[i].OnTick(func(tk Tick) { // through JSON and the coordinator's handler path
			seq[i]++
			hs, err := encodeHists(tk.Hists)
			if err != nil {
				t.Fatal(err)
			}
			b, err := json.Marshal(tickMessage{Run: c.run, Agent: i, Seq: seq[i], T: tk.T, Counters: tk.Counters, Hists: hs})
			if err != nil {
				t.Fatal(err)
			}
			var m tickMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			dec, err := decodeHists(m.Hists)
			if err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			c.addTickLocked(c.agents[i], i, &m, dec)
			c.mu.Unlock()
			c.live.Absorb(dec, m.Counters)
		})
	}
	for round := 0; round < 5; round++ {
		for k := 0; k < 20000; k++ {
			// A long tail: most values around 1 ms, some up to minutes.
			d := time.Duration(rng.ExpFloat64() * float64(time.Millisecond))
			if rng.IntN(100) == 0 {
				d = time.Duration(rng.Int64N(int64(3 * time.Minute)))
			}
			i := rng.IntN(agents)
			recs[i].Hist(HistE2E).record(d)
			recs[i].Add(CountReceived, 1)
			all.record(d)
		}
		for i := range recs {
			recs[i].tick(c.startAt.Add(time.Duration(round+1) * time.Second))
		}
	}
	want := all.copy()
	got := c.live.Histograms()[HistE2E]
	if got.TotalCount() != 100000 || !sameDistribution(got, want) {
		t.Fatalf("live merge: %d values; distribution differs", got.TotalCount())
	}
	// No agent has reported: the report comes from their ticks, and says
	// that they did not report.
	rep, err := c.report()
	if err == nil {
		t.Error("agents without a report did not fail the run")
	}
	if rep.Metrics[HistE2E] != percentilesOf(want) || rep.Counters[CountReceived] != 100000 {
		t.Errorf("report: %+v want %+v; received %d", rep.Metrics[HistE2E], percentilesOf(want), rep.Counters[CountReceived])
	}
	for _, q := range quantiles() {
		if g, w := got.ValueAtQuantile(q), want.ValueAtQuantile(q); g != w {
			t.Fatalf("p%v: %d, want %d", q, g, w)
		}
	}
	// The timeline has 5 seconds, each the sum of the agents'.
	if len(rep.Timeline) != 5 {
		t.Fatalf("%d rows", len(rep.Timeline))
	}
	for _, iv := range rep.Timeline {
		if iv.Counters[CountReceived] != 20000 || iv.Latency[HistE2E].Count != 20000 {
			t.Errorf("row %v: %v %+v", iv.T, iv.Counters, iv.Latency[HistE2E])
		}
	}
}

// quantiles are 0, 0.1, ... 99.9 and 99.9, 99.901, ... 100.
func quantiles() []float64 {
	var qs []float64
	for i := 0; i < 1000; i++ {
		qs = append(qs, float64(i)/10)
	}
	for i := 0; i <= 100; i++ {
		qs = append(qs, 99.9+float64(i)/1000)
	}
	return qs
}

// sameDistribution reports whether a and b hold the same count in every
// bucket.
func sameDistribution(a, b *hdrhistogram.Histogram) bool {
	da, db := a.Distribution(), b.Distribution()
	if len(da) != len(db) {
		return false
	}
	for i := range da {
		if da[i] != db[i] {
			return false
		}
	}
	return true
}

func TestDecodeHistRejectsOtherGeometry(t *testing.T) {
	h := hdrhistogram.New(1, 1<<40, 5)
	_ = h.RecordValue(5)
	s, err := encodeHist(h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := decodeHist(s); err == nil {
		t.Error("a histogram of another geometry decoded")
	}
	for _, bad := range []string{"", "!!", "AAAA", "HIST"} {
		if _, err := decodeHist(bad); err == nil {
			t.Errorf("%q decoded", bad)
		}
	}
	ok := newHist()
	_ = ok.RecordValue(1234)
	s, _ = encodeHist(ok)
	if h, err := decodeHist(s); err != nil || h.TotalCount() != 1 {
		t.Errorf("round trip: %v", err)
	}
}

func FuzzDecodeHist(f *testing.F) {
	h := newHist()
	_ = h.RecordValue(42)
	s, _ := encodeHist(h)
	f.Add(s)
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if h, err := decodeHist(s); err == nil && h.HighestTrackableValue() != newHist().HighestTrackableValue() {
			t.Fatalf("decoded a histogram of another geometry")
		}
	})
}

func TestCoordinatorRegisterTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := Config{URL: "ws://127.0.0.1:1", Key: []byte("k"), Scenario: "idle", Conns: 10}
	agentErr := make(chan error, 1)
	go func() { // one agent of the two comes
		_, err := RunAgent(ctx, AgentConfig{Coordinator: "http://" + ln.Addr().String()})
		agentErr <- err
	}()
	start := time.Now()
	rep, err := RunCoordinator(ctx, CoordinatorConfig{Listener: ln, Agents: 2, Config: cfg, RegisterTimeout: time.Second, Log: testWriter{t}})
	if rep != nil || err == nil || !strings.Contains(err.Error(), "1 of 2 agents registered") {
		t.Fatalf("report %v, error %v", rep, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("gave up after %v, want about 1 s", d)
	}
	select { // the agent that came learns the run is off
	case err := <-agentErr:
		if err == nil {
			t.Error("the agent ran without a coordinator")
		}
	case <-time.After(5 * time.Second):
		t.Error("the agent still waits")
	}
}

// TestCoordinatorAgentVanishes: an agent registers, sends one interval and
// goes away; the coordinator finishes within AgentTimeout and says so.
func TestCoordinatorAgentVanishes(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "idle")
	cfg.Conns = 10
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	var good *Report
	go func() {
		defer wg.Done()
		good, _ = RunAgent(ctx, AgentConfig{Coordinator: base, Name: "good", Log: testWriter{t}})
	}()
	go func() { // the vanishing one, by hand
		defer wg.Done()
		a := &agentClient{base: base, hc: &http.Client{}, log: testWriter{t}}
		reg, err := a.register(ctx, "vanishing")
		if err != nil {
			t.Error(err)
			return
		}
		a.run, a.agent = reg.Run, reg.Agent
		if _, err := a.barrier(ctx, "start"); err != nil {
			t.Error(err)
			return
		}
		err = a.post(ctx, "/v1/tick", tickMessage{Run: a.run, Agent: a.agent, Seq: 1, T: 1, Counters: map[string]int64{CountConnOK: 3}}, nil)
		if err != nil {
			t.Error(err)
		}
		// A tick for another run and one for an agent that does not
		// exist are refused.
		for _, m := range []tickMessage{{Run: "other", Agent: a.agent, Seq: 2}, {Run: a.run, Agent: 7, Seq: 2}} {
			if err := a.post(ctx, "/v1/tick", m, nil); err == nil {
				t.Errorf("tick %+v accepted", m)
			}
		}
	}()
	start := time.Now()
	rep, err := RunCoordinator(ctx, CoordinatorConfig{Listener: ln, Agents: 2, Config: cfg, StartDelay: 100 * time.Millisecond, AgentTimeout: 2 * time.Second, Log: testWriter{t}})
	wg.Wait()
	if err == nil || !strings.Contains(err.Error(), "1 of 2 agents failed") {
		t.Errorf("error %v", err)
	}
	if rep == nil {
		t.Fatal("no report")
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("finished after %v", d)
	}
	silent := false
	for _, w := range rep.Warnings {
		silent = silent || strings.Contains(w, "(vanishing) went silent")
	}
	if !silent {
		t.Errorf("warnings %q", rep.Warnings)
	}
	if good == nil || rep.Counters[CountConnOK] != 5+3 {
		t.Errorf("counters %v (the good agent's 5 and the vanished one's 3)", rep.Counters)
	}
}
