package loadtest

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/gateway/auth"
	"github.com/parley-im/parley/internal/node"
)

// startNode starts an in-process dev node that lets the tests connect as
// fast as they like, and returns it with its dev key.
func startNode(t *testing.T) (*node.Node, []byte) {
	t.Helper()
	return startNodeWith(t, gateway.Config{ConnectRate: 100000, ConnectBurst: 100000})
}

// startNodeWith starts an in-process dev node with gateway settings gw and
// returns it with its dev key.
func startNodeWith(t *testing.T, gw gateway.Config) (*node.Node, []byte) {
	t.Helper()
	dir := t.TempDir()
	n, err := node.Start(node.Config{Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0", DataDir: dir, Dev: "true", Gateway: gw})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	key, err := auth.LoadOrCreateDevKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	return n, key
}

// metric sums the samples of a Prometheus metric family of n's admin
// endpoint whose name and labels start with prefix, e.g.
// `parley_connects_total{result="ok"`.
func metric(t *testing.T, n *node.Node, prefix string) float64 {
	t.Helper()
	var sum float64
	for sample, v := range scrape(t, "http://"+n.AdminAddr()+"/metrics") {
		rest, ok := strings.CutPrefix(sample, prefix)
		if ok && (rest == "" || strings.ContainsRune(" {,}", rune(rest[0]))) { // not a longer name
			sum += v
		}
	}
	return sum
}

// scrape fetches url and returns its samples by name and labels as
// written, e.g. `parley_loadtest_closes_total{kind="close_4001"}`.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func baseConfig(n *node.Node, key []byte, scenario string) Config {
	return Config{
		URL: "ws://" + n.Addr(), Key: key, Scenario: scenario, Seed: 7,
		ConnectRate: 500, Duration: time.Second, Warmup: 300 * time.Millisecond,
		Settle: 200 * time.Millisecond, ServerPID: os.Getpid(), Log: io.Discard,
	}
}

func TestIdle(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "idle")
	cfg.Conns = 20
	cfg.Log = testWriter{t}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan struct{})
	peak := 0
	go func() { // the server's own count while the connections are held
		defer close(done)
		for i := 0; i < 200 && ctx.Err() == nil; i++ {
			peak = max(peak, n.Gateway().Connections())
			time.Sleep(10 * time.Millisecond)
		}
	}()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	<-done
	if r.Connect.OK != 20 || len(r.Connect.Errors) != 0 || r.Dropped != 0 {
		t.Fatalf("connect %+v dropped %d", r.Connect, r.Dropped)
	}
	if peak != 20 {
		t.Errorf("server saw at most %d connections, want 20", peak)
	}
	if got := metric(t, n, `parley_connects_total{result="ok"`); got != 20 {
		t.Errorf("server counted %v successful connects, want 20", got)
	}
	if r.Connect.Latency.Count != 20 || r.Server == nil || r.Server.Conns != 20 || r.Tester.Conns != 20 {
		t.Errorf("report: %+v server %+v tester %+v", r.Connect.Latency, r.Server, r.Tester)
	}
	if r.Server.AfterKiB <= 0 {
		t.Errorf("no RSS reading: %+v", r.Server)
	}
	logSummary(t, r)
}

func TestConnect(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "connect")
	cfg.Steps = []float64{50, 100}
	cfg.StepDuration = 500 * time.Millisecond
	r := mustRun(t, cfg, 30*time.Second)
	if len(r.Steps) != 2 || r.Steps[0].Attempted != 25 || r.Steps[1].Attempted != 50 {
		t.Fatalf("steps %+v", r.Steps)
	}
	var ok int64
	for _, s := range r.Steps {
		ok += s.OK
		if len(s.Errors) != 0 {
			t.Errorf("step %v: errors %v %v", s.TargetRate, s.Errors, s.ErrorSamples)
		}
	}
	if ok != 75 {
		t.Errorf("%d connects ok, want 75", ok)
	}
	if got := metric(t, n, `parley_connects_total{result="ok"`); got != 75 {
		t.Errorf("server counted %v successful connects, want 75", got)
	}
	// Whether a step meets its rate depends on the machine's load (this
	// test runs beside others under -race): check that the report is
	// consistent with its steps, not the timing.
	var wantMet float64
	for _, s := range r.Steps {
		if s.Met != (s.AchievedRate >= 0.95*s.TargetRate && len(s.Errors) == 0) {
			t.Errorf("step %v: met=%v with achieved %v", s.TargetRate, s.Met, s.AchievedRate)
		}
		if s.Met {
			wantMet = s.TargetRate
		}
	}
	if r.LastMet != wantMet {
		t.Errorf("last met %v, want %v (steps %+v)", r.LastMet, wantMet, r.Steps)
	}
	// The connections were closed afterwards.
	deadline := time.Now().Add(5 * time.Second)
	for n.Gateway().Connections() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if c := n.Gateway().Connections(); c != 0 {
		t.Errorf("server still holds %d connections", c)
	}
}

func TestChat(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "chat")
	cfg.Conns = 10 // pairs
	cfg.Rate = 100 // 10/s per sender
	r := mustRun(t, cfg, 30*time.Second)
	c := r.Chat
	// 100/s over 1.3 s: 130 scheduled sends.
	if c.Sent < 120 || c.Sent > 140 {
		t.Errorf("sent %d, want about 130", c.Sent)
	}
	if c.Acked != c.Sent || c.Received != c.Sent || c.Lost != 0 || c.Duplicated != 0 || c.Reordered != 0 || c.Unacked != 0 || len(c.SendErrors) != 0 {
		t.Errorf("chat %+v", c)
	}
	if got := metric(t, n, "parley_messages_sent_total"); got != float64(c.Sent) {
		t.Errorf("server stored %v messages, the load tester sent %d", got, c.Sent)
	}
	if got := metric(t, n, "parley_messages_delivered_total"); got < float64(c.Sent) {
		t.Errorf("server delivered %v messages, want at least %d", got, c.Sent)
	}
	// Only messages after the warm-up are measured.
	if c.EndToEnd.Count == 0 || c.EndToEnd.Count >= c.Sent || c.Ack.Count != c.EndToEnd.Count {
		t.Errorf("measured e2e %d ack %d of %d sent", c.EndToEnd.Count, c.Ack.Count, c.Sent)
	}
	if c.EndToEnd.P50 <= 0 || c.EndToEnd.P50 > c.EndToEnd.Max {
		t.Errorf("e2e percentiles %+v", c.EndToEnd)
	}
	// The recorder agrees with the books, and measured ping round trips.
	if r.Counters[CountSent] != c.Sent || r.Counters[CountAcked] != c.Acked || r.Counters[CountReceived] != c.Received ||
		r.Counters[CountExpected] != c.Acked || r.Counters[CountLost] != 0 {
		t.Errorf("recorder counters %v, books %+v", r.Counters, c)
	}
	if r.Metrics[HistE2E].Count != c.EndToEnd.Count || r.Metrics[HistConnect].Count != 20 {
		t.Errorf("recorder histograms %+v", r.Metrics)
	}
	if r.Metrics[HistPing].Count == 0 {
		t.Errorf("no ping round trips measured")
	}
	logSummary(t, r)
}

// mustRun runs cfg, for at most timeout, and fails the test if the run
// fails.
func mustRun(t *testing.T, cfg Config, timeout time.Duration) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// logSummary logs the human summary of a report or search.
func logSummary(t *testing.T, r interface{ WriteSummary(io.Writer) }) {
	t.Helper()
	var sb strings.Builder
	r.WriteSummary(&sb)
	t.Log("\n" + sb.String())
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
