package loadtest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// A chat run with everything the command wires around it: a recorder made
// up front, live progress, the Prometheus endpoint scraped mid-run, then
// the JSON and HTML reports and the SLO check.
func TestChatOutputs(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "chat")
	cfg.Conns = 5 // pairs
	cfg.Rate = 50
	cfg.Duration = 1500 * time.Millisecond
	rec := NewRecorder(time.Now())
	cfg.Recorder = rec
	var progress strings.Builder // written on the ticking goroutine, read after Run
	rec.OnTick(NewProgress(&progress, rec, cfg.Scenario))
	stop, addr, err := ServePrometheus("127.0.0.1:0", rec)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

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

	// Mid-run, the endpoint shows the connections and the sends so far.
	var mid map[string]float64
	for deadline := time.Now().Add(20 * time.Second); ; {
		mid = scrape(t, "http://"+addr+"/metrics")
		if mid[`parley_loadtest_connections{state="open"}`] == 10 && mid["parley_loadtest_sent_total"] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no sends seen on the endpoint: %v", mid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if mid[`parley_loadtest_connections{state="target"}`] != 10 || mid["parley_loadtest_conns_opened_total"] != 10 {
		t.Errorf("mid-run scrape: %v", mid)
	}

	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("run did not end")
	}
	if res.err != nil {
		t.Fatal(res.err)
	}
	r := res.r
	end := scrape(t, "http://"+addr+"/metrics")
	if got := end["parley_loadtest_sent_total"]; got != float64(r.Chat.Sent) || got <= mid["parley_loadtest_sent_total"] {
		t.Errorf("sent: %v at the end, %v mid-run, report %d", got, mid["parley_loadtest_sent_total"], r.Chat.Sent)
	}
	if got := end[`parley_loadtest_latency_seconds_count{histogram="e2e"}`]; got != float64(r.Metrics[HistE2E].Count) || got == 0 {
		t.Errorf("e2e count %v, report %d", got, r.Metrics[HistE2E].Count)
	}

	lines := strings.Split(strings.TrimSpace(progress.String()), "\n")
	if len(lines) < 2 || len(lines) != len(r.Timeline) {
		t.Errorf("%d progress lines for %d intervals:\n%s", len(lines), len(r.Timeline), progress.String())
	}
	if !strings.Contains(progress.String(), "conns     10/10") || !strings.Contains(progress.String(), "e2e p50 ") {
		t.Errorf("progress:\n%s", progress.String())
	}

	slos, err := ParseSLO("loss=0,e2e.p99<5s,errors=0,delivery>=100%,rate>10,conns>=100%")
	if err != nil {
		t.Fatal(err)
	}
	if !r.CheckSLO(slos) {
		t.Errorf("SLOs failed: %+v", r.SLO)
	}
	slos, err = ParseSLO("loss=0,p50<0.001ms")
	if err != nil {
		t.Fatal(err)
	}
	if r.CheckSLO(slos) || !r.SLO[0].OK || r.SLO[1].OK || r.SLO[1].Metric != "e2e.p50" {
		t.Errorf("p50<0.001ms held: %+v", r.SLO)
	}

	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Version != ReportVersion || len(back.Timeline) != len(r.Timeline) || len(back.SLO) != 2 || back.Counters[CountSent] != r.Chat.Sent {
		t.Errorf("JSON round trip: version %d, %d intervals, SLO %+v", back.Version, len(back.Timeline), back.SLO)
	}
	var page strings.Builder
	if err := WriteHTML(&page, r); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, page.String())
	if !strings.Contains(page.String(), "e2e latency per second (primary)") || !strings.Contains(page.String(), "p50&lt;0.001ms") {
		t.Error("HTML report lacks the e2e chart or the SLO")
	}
}
