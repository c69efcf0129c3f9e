package loadtest

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-im/parley/gateway"
)

// TestSearchBreaks searches chat's rate against a server that allows each
// connection 5 frames per second (burst 5): 2 senders at 1 and 4 msg/s
// each stay under it, at 16 msg/s each the server refuses about 9 of 21
// sends per sender, so "errors=0" breaks at the third step.
func TestSearchBreaks(t *testing.T) {
	n, key := startNodeWith(t, gateway.Config{ConnectRate: 100000, ConnectBurst: 100000, FrameRate: 5, FrameBurst: 5})
	cfg := baseConfig(n, key, "chat")
	cfg.Conns = 2
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec := SearchSpec{Param: "rate", Start: 2, Factor: 4, Max: 1000, SLO: "errors=0", Pause: 100 * time.Millisecond}
	sr, err := Search(ctx, cfg, spec)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	sr.WriteSummary(&sb)
	t.Log("\n" + sb.String())
	if len(sr.Steps) != 3 || !sr.Broke || sr.Stopped != "slo" || sr.LastGood != 8 {
		t.Fatalf("steps %d, broke %v (%s), last good %v; want 3 steps, broke at 32 after 8", len(sr.Steps), sr.Broke, sr.Stopped, sr.LastGood)
	}
	for i, want := range []float64{2, 8, 32} {
		s := sr.Steps[i]
		if s.Value != want || s.Step != i+1 || s.Report == nil || s.Report.Chat == nil || s.Report.Chat.TargetRate != want {
			t.Errorf("step %d: value %v, report %+v", i+1, s.Value, s.Report)
		}
		if s.Report.Seed != cfg.Seed+int64(i) {
			t.Errorf("step %d ran with seed %d, want %d", i+1, s.Report.Seed, cfg.Seed+int64(i))
		}
	}
	for _, s := range sr.Steps[:2] {
		if !s.OK || s.Errors != 0 || s.Delivery == nil || *s.Delivery != 100 || s.P99 <= 0 || s.Primary != HistE2E {
			t.Errorf("good step %+v", s)
		}
	}
	bad := sr.Steps[2]
	if bad.OK || bad.Errors == 0 || bad.Report.Chat.SendErrors["rate_limited"] == 0 || len(bad.Failed) != 1 || !strings.HasPrefix(bad.Failed[0], "errors=0 (was ") {
		t.Errorf("breaking step %+v, send errors %v", bad, bad.Report.Chat.SendErrors)
	}
	if !strings.Contains(sb.String(), "last good rate: 8 (broke at 32)") {
		t.Error("summary does not give the last good rate")
	}
	b, err := json.Marshal(sr)
	if err != nil {
		t.Fatal(err)
	}
	var back struct {
		LastGood float64 `json:"last_good"`
		Steps    []struct {
			OK     bool     `json:"ok"`
			Failed []string `json:"failed"`
		} `json:"steps"`
	}
	if err := json.Unmarshal(b, &back); err != nil || back.LastGood != 8 || len(back.Steps) != 3 || back.Steps[2].OK || len(back.Steps[2].Failed) != 1 {
		t.Errorf("JSON: %v %+v", err, back)
	}
}

// TestSearchMax runs a search whose SLO holds to its Max: it stops there,
// the last step clamped to Max.
func TestSearchMax(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "idle")
	cfg.Duration, cfg.Settle = 50*time.Millisecond, -1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sr, err := Search(ctx, cfg, SearchSpec{Param: "conns", Start: 4, Factor: 2, Max: 10, SLO: "errors=0", Pause: -1})
	if err != nil {
		t.Fatal(err)
	}
	var got []float64
	for _, s := range sr.Steps {
		got = append(got, s.Value)
		if !s.OK || s.Report.Connect.OK != int64(s.Value) {
			t.Errorf("step %+v connect %+v", s, s.Report.Connect)
		}
	}
	if !slices.Equal(got, []float64{4, 8, 10}) || sr.Broke || sr.Stopped != "max" || sr.LastGood != 10 {
		t.Errorf("values %v, broke %v, stopped %s, last good %v", got, sr.Broke, sr.Stopped, sr.LastGood)
	}
}

func TestSearchSpec(t *testing.T) {
	values := func(s SearchSpec, n int) []float64 {
		if _, err := s.check("chat"); err != nil {
			t.Fatal(err)
		}
		out := []float64{s.Start}
		for v := s.Start; len(out) < n; {
			var ok bool
			if v, ok = s.next(v); !ok {
				break
			}
			out = append(out, v)
		}
		return out
	}
	for _, c := range []struct {
		spec SearchSpec
		want []float64
	}{
		{SearchSpec{Param: "rate", Start: 100, SLO: "p99<1s"}, []float64{100, 150, 225, 337.5, 506.25, 759.375}}, // factor 1.5 by default
		{SearchSpec{Param: "rate", Start: 100, Step: 50, Max: 220, SLO: "p99<1s"}, []float64{100, 150, 200, 220}},
		{SearchSpec{Param: "conns", Start: 3, Factor: 1.2, SLO: "p99<1s"}, []float64{3, 4, 5, 6, 7, 8}}, // whole, and rising
		{SearchSpec{Param: "conns", Start: 10, Factor: 3, Max: 10, SLO: "p99<1s"}, []float64{10}},
	} {
		if got := values(c.spec, 6); !slices.Equal(got, c.want) {
			t.Errorf("%+v: values %v, want %v", c.spec, got, c.want)
		}
	}
	for _, c := range []struct {
		spec     SearchSpec
		scenario string
		want     string
	}{
		{SearchSpec{Param: "users", Start: 1, SLO: "p99<1s"}, "chat", `parameter "users"`},
		{SearchSpec{Param: "rate", Start: 1, SLO: "p99<1s"}, "connect", "connect scenario"},
		{SearchSpec{Param: "rate", SLO: "p99<1s"}, "chat", "start 0"},
		{SearchSpec{Param: "rate", Start: 1, Factor: 2, Step: 1, SLO: "p99<1s"}, "chat", "not both"},
		{SearchSpec{Param: "rate", Start: 1, Factor: 0.5, SLO: "p99<1s"}, "chat", "more than 1"},
		{SearchSpec{Param: "rate", Start: 1, Step: -1, SLO: "p99<1s"}, "chat", "step -1"},
		{SearchSpec{Param: "rate", Start: 10, Max: 5, SLO: "p99<1s"}, "chat", "below start"},
		{SearchSpec{Param: "rate", Start: 1, MaxSteps: 1000, SLO: "p99<1s"}, "chat", "max steps"},
		{SearchSpec{Param: "rate", Start: 1}, "chat", "SLO is required"},
		{SearchSpec{Param: "rate", Start: 1, SLO: "p99<<1"}, "chat", "slo"},
	} {
		if _, err := c.spec.check(c.scenario); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v on %s: error %v, want %q", c.spec, c.scenario, err, c.want)
		}
	}
	// A start of 0 takes the configured value.
	cfg := Config{Scenario: "chat", Conns: 7}
	if _, err := Search(context.Background(), cfg, SearchSpec{Param: "conns", SLO: "p99<1s", MaxSteps: 1}); err == nil || !strings.Contains(err.Error(), "URL") {
		t.Errorf("search from Conns 7 without a URL: %v (want the config error, not the start's)", err)
	}
}
