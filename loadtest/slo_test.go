package loadtest

import (
	"strings"
	"testing"
)

func TestParseSLO(t *testing.T) {
	for _, tc := range []struct {
		in        string
		metric    string
		op        string
		threshold float64
		percent   bool
	}{
		{"p99<20ms", "p99", "<", 20, false},
		{" p99.9 <= 1.5s ", "p99.9", "<=", 1500, false},
		{"p50<500us", "p50", "<", 0.5, false},
		{"max>=3", "max", ">=", 3, false},
		{"mean=2.5", "mean", "=", 2.5, false},
		{"ack.p99<10ms", "ack.p99", "<", 10, false},
		{"connect.p99.9<100ms", "connect.p99.9", "<", 100, false},
		{"fanout_last.p99.99>1ms", "fanout_last.p99.99", ">", 1, false},
		{"loss=0", "loss", "=", 0, false},
		{"loss<0.1%", "loss", "<", 0.1, true},
		{"dup<=2", "dup", "<=", 2, false},
		{"reorder=0", "reorder", "=", 0, false},
		{"errors<1%", "errors", "<", 1, true},
		{"errors<=10", "errors", "<=", 10, false},
		{"delivery>=99.9%", "delivery", ">=", 99.9, true},
		{"delivery>=0.999", "delivery", ">=", 99.9, true},
		{"rate>=900", "rate", ">=", 900, false},
		{"rate>=900/s", "rate", ">=", 900, false},
		{"conns>=1000", "conns", ">=", 1000, false},
		{"conns>=99%", "conns", ">=", 99, true},
	} {
		slos, err := ParseSLO(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if len(slos) != 1 {
			t.Errorf("%q: %d terms", tc.in, len(slos))
			continue
		}
		s := slos[0]
		if s.Metric != tc.metric || s.Op != tc.op || s.Threshold != tc.threshold || s.Percent != tc.percent {
			t.Errorf("%q: got %+v", tc.in, s)
		}
	}

	slos, err := ParseSLO("p99<20ms, loss=0,errors<0.1%")
	if err != nil || len(slos) != 3 || slos[1].Expr != "loss=0" {
		t.Errorf("three terms: %+v %v", slos, err)
	}
	if slos, err := ParseSLO("  "); err != nil || slos != nil {
		t.Errorf("empty: %+v %v", slos, err)
	}

	for _, tc := range []struct{ in, want string }{
		{"p99", "no operator"},
		{"<20ms", "no metric"},
		{"p99<", "no value"},
		{"p99<<20ms", "more than one operator"},
		{"p98<20ms", `unknown metric "p98"`},
		{"e2f.p99<20ms", "with a histogram of connect, ack, e2e"},
		{"e2e.p98<20ms", "unknown metric"},
		{"latency<3", "loss, dup, reorder, errors, delivery, rate, conns"},
		{"p99<20 parsecs", "duration such as 20ms"},
		{"p99<-5ms", "non-negative"},
		{"p99<5%", "duration such as 20ms"},
		{"loss<abc", "non-negative number"},
		{"loss<-1", "non-negative number"},
		{"delivery>99", "fraction"},
		{"errors<101%", "over 100"},
		{"rate>5%", "not a percentage"},
		{"p99<20ms,,loss=0", "empty term"},
		{"p99<20ms,", "empty term"},
	} {
		_, err := ParseSLO(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.want)
		}
	}
}

func TestCheckSLO(t *testing.T) {
	base := func() *Report {
		return &Report{
			Scenario: "chat",
			Metrics: map[string]Percentiles{
				HistE2E: {Count: 100, Min: 0.2, Mean: 2, P50: 1.5, P90: 3, P99: 8, P999: 15, P9999: 20, Max: 25},
				HistAck: {Count: 100, P50: 1, P99: 4, Max: 9},
			},
			Counters: map[string]int64{
				CountConnOK: 20, CountSent: 980, CountExpected: 1000, CountReceived: 995, CountLost: 5, CountDup: 1,
				PrefixConnErr + "timeout": 2, PrefixClose + "close_4001": 1, PrefixSendErr + "rate_limited": 2,
			},
			Chat: &ChatStats{AchievedRate: 950},
			Timeline: []Interval{
				{T: 1, Gauges: map[string]int64{GaugeOpen: 10, GaugeTarget: 20}},
				{T: 2, Gauges: map[string]int64{GaugeOpen: 19, GaugeTarget: 20}},
				{T: 3, Gauges: map[string]int64{GaugeOpen: 0, GaugeTarget: 20}},
			},
		}
	}
	for _, tc := range []struct {
		expr   string
		ok     bool
		metric string
		value  float64
		note   string // a substring of the note, for terms without data
		report func(*Report)
	}{
		{expr: "p99<20ms", ok: true, metric: "e2e.p99", value: 8},
		{expr: "p99<8ms", ok: false, metric: "e2e.p99", value: 8},
		{expr: "p99<=8", ok: true, metric: "e2e.p99", value: 8},
		{expr: "p99.99<=20ms", ok: true, metric: "e2e.p99.99", value: 20},
		{expr: "max>24ms", ok: true, metric: "e2e.max", value: 25},
		{expr: "mean=2", ok: true, metric: "e2e.mean", value: 2},
		{expr: "ack.p99<5ms", ok: true, metric: "ack.p99", value: 4},
		{expr: "ack.max<5ms", ok: false, metric: "ack.max", value: 9},
		{expr: "ping_rtt.p99<1s", ok: false, metric: "ping_rtt.p99", note: "no samples"},
		{expr: "p99<1s", ok: false, metric: "fanout_last.p99", note: "no samples",
			report: func(r *Report) { r.Scenario = "fanout" }},
		{expr: "p50<1s", ok: false, metric: "e2e.p50", note: "no samples",
			report: func(r *Report) { r.Metrics[HistE2E] = Percentiles{} }},
		{expr: "p50<1s", ok: true, metric: "connect.p50", value: 3,
			report: func(r *Report) { r.Scenario = "idle"; r.Metrics[HistConnect] = Percentiles{Count: 1, P50: 3} }},
		{expr: "loss=0", ok: false, metric: "loss", value: 5},
		{expr: "loss<=5", ok: true, metric: "loss", value: 5},
		{expr: "loss<=0.5%", ok: true, metric: "loss", value: 0.5},
		{expr: "loss<0.5%", ok: false, metric: "loss", value: 0.5},
		{expr: "loss=0", ok: false, metric: "loss", note: "no delivery counts",
			report: func(r *Report) { delete(r.Counters, CountExpected) }},
		{expr: "loss<1%", ok: false, metric: "loss", note: "no messages were expected",
			report: func(r *Report) { r.Counters[CountExpected] = 0 }},
		{expr: "dup<=1", ok: true, metric: "dup", value: 1},
		{expr: "reorder=0", ok: true, metric: "reorder", value: 0},
		{expr: "delivery>=99.5%", ok: true, metric: "delivery", value: 99.5},
		{expr: "delivery>0.999", ok: false, metric: "delivery", value: 99.5},
		{expr: "errors<=5", ok: true, metric: "errors", value: 5},
		{expr: "errors<5", ok: false, metric: "errors", value: 5},
		// 5 errors of 20 opened + 2 failed connects + 980 sends.
		{expr: "errors<0.5%", ok: true, metric: "errors", value: 100 * 5.0 / 1002},
		{expr: "errors=0", ok: false, metric: "errors", note: "nothing was attempted",
			report: func(r *Report) { r.Counters = map[string]int64{} }},
		{expr: "rate>=900", ok: true, metric: "rate", value: 950},
		{expr: "rate>=1000", ok: false, metric: "rate", value: 950},
		{expr: "rate>=1", ok: false, metric: "rate", note: "no achieved rate",
			report: func(r *Report) { r.Scenario = "presence" }},
		{expr: "rate>=4000", ok: true, metric: "rate", value: 4000,
			report: func(r *Report) { r.Scenario = "connect"; r.Steps = make([]ConnectStats, 3); r.LastMet = 4000 }},
		{expr: "rate>=100", ok: true, metric: "rate", value: 480,
			report: func(r *Report) { r.Scenario = "idle"; r.Connect = &ConnectStats{AchievedRate: 480} }},
		{expr: "rate>=9", ok: true, metric: "rate", value: 9.5,
			report: func(r *Report) { r.Scenario = "fanout"; r.Fanout = &FanoutStats{AchievedRate: 9.5} }},
		{expr: "rate>=50", ok: true, metric: "rate", value: 60,
			report: func(r *Report) { r.Scenario = "group"; r.Group = &GroupStats{AchievedRate: 60} }},
		{expr: "conns>=19", ok: true, metric: "conns", value: 19},
		{expr: "conns>=99%", ok: false, metric: "conns", value: 95},
		{expr: "conns>=1", ok: false, metric: "conns", note: "no conns_open",
			report: func(r *Report) { r.Timeline = nil }},
	} {
		r := base()
		if tc.report != nil {
			tc.report(r)
		}
		slos, err := ParseSLO(tc.expr)
		if err != nil {
			t.Fatalf("%q: %v", tc.expr, err)
		}
		ok := r.CheckSLO(slos)
		if len(r.SLO) != 1 {
			t.Fatalf("%q: %d results", tc.expr, len(r.SLO))
		}
		res := r.SLO[0]
		if ok != tc.ok || res.OK != tc.ok || res.Metric != tc.metric || res.Expr != tc.expr {
			t.Errorf("%q: ok %v, result %+v", tc.expr, ok, res)
		}
		if tc.note != "" {
			if !strings.Contains(res.Note, tc.note) {
				t.Errorf("%q: note %q, want one containing %q", tc.expr, res.Note, tc.note)
			}
		} else if res.Note != "" || !near(res.Value, tc.value) {
			t.Errorf("%q: value %v note %q, want %v", tc.expr, res.Value, res.Note, tc.value)
		}
	}

	// All terms are checked; one failure fails the set.
	r := base()
	slos, _ := ParseSLO("p99<20ms,loss=0,rate>=900")
	if r.CheckSLO(slos) || len(r.SLO) != 3 || !r.SLO[0].OK || r.SLO[1].OK || !r.SLO[2].OK {
		t.Errorf("set: %+v", r.SLO)
	}
	if !r.CheckSLO(nil) || r.SLO != nil {
		t.Errorf("no SLOs: %+v", r.SLO)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }
