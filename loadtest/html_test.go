package loadtest

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// wellFormed checks that page parses as XML: every element closed and
// nested, attributes quoted, no stray '<' or '&'.
func wellFormed(t *testing.T, page string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(page))
	d.Strict = true
	for {
		_, err := d.Token()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			line, col := d.InputPos()
			lines := strings.Split(page, "\n")
			t.Fatalf("not well-formed at %d:%d: %v\n%s", line, col, err, lines[min(line, len(lines))-1])
		}
	}
}

func TestWriteHTML(t *testing.T) {
	start := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	r := &Report{
		Version: ReportVersion, Tool: "parley loadtest v9.8.7", Scenario: "chat", URL: "ws://10.1.2.3:8080/?a=1&b=<2>",
		Start: start, End: start.Add(12 * time.Second), GOMAXPROCS: 2, Seed: 424242, Conns: 20,
		Chat: &ChatStats{Pairs: 10, AchievedRate: 99.5},
		Metrics: map[string]Percentiles{
			HistE2E:     {Count: 1234, Min: 0.25, Mean: 1.5, P50: 1.125, P90: 2.5, P99: 7.375, P999: 12.5, P9999: 30.25, Max: 31.5},
			HistAck:     {Count: 1200, Min: 0.2, P50: 0.875, P90: 1, P99: 3, P999: 4, P9999: 5, Max: 6},
			HistConnect: {Count: 20, Min: 1, P50: 2, P90: 3, P99: 4, P999: 4, P9999: 4, Max: 4},
		},
		Counters: map[string]int64{
			CountConnOK: 20, CountSent: 1250, CountReceived: 1249, CountExpected: 1250, CountLost: 1,
			PrefixClose + "close_4001": 3,
		},
		CPU:      CPU{Seconds: 1.5, WallSeconds: 12, Utilization: 0.0625},
		Warnings: []string{`<script>alert("x")</script> & more`},
	}
	for i := 1; i <= 12; i++ {
		iv := Interval{
			T:        float64(i),
			Counters: map[string]int64{CountSent: 100, CountReceived: 99},
			Gauges:   map[string]int64{GaugeOpen: 20, GaugeTarget: 20},
		}
		if i <= 2 {
			iv.Counters = map[string]int64{CountConnOK: 10}
			iv.Gauges[GaugeOpen] = int64(10 * i)
		} else {
			iv.Latency = map[string]Percentiles{
				HistE2E: {Count: 100, P50: 1.125, P99: float64(i), Max: 2 * float64(i)},
				HistAck: {Count: 100, P50: 0.875, P99: 2, Max: 3},
			}
		}
		if i == 7 {
			iv.Counters[PrefixClose+"close_4001"] = 3
			delete(iv.Latency, HistAck) // a gap in ack's line
		}
		r.Timeline = append(r.Timeline, iv)
	}
	slos, err := ParseSLO("p99<5ms,loss=0,ack.p99<10ms")
	if err != nil {
		t.Fatal(err)
	}
	r.CheckSLO(slos)

	var b strings.Builder
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	wellFormed(t, page)
	for _, bad := range []string{"<script", "<link", "@import", "src=", "http://fonts", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q: it must load nothing and run nothing", bad)
		}
	}
	for _, want := range []string{
		"<!DOCTYPE html>", "<svg",
		"&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more", // the warning, escaped
		"ws://10.1.2.3:8080/?a=1&amp;b=&lt;2&gt;",
		"parley loadtest v9.8.7", "424242", "2026-03-04 05:06:07 UTC", "12s",
		"e2e latency per second (primary)", "ack latency per second", "Connections", "Messages per second", "Connects and errors per second",
		"e2e by percentile (n=1234)", ">99.99<", ">max<",
		"7.375", "31.500", "30.250", "1234", "1249", "close.close_4001",
		"p99&lt;5ms", "FAIL", "e2e.p99", "loss",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(page, "<svg"); n != 5+3 {
		t.Errorf("%d charts, want 5 over time and 3 distributions", n)
	}

	// An empty report renders too.
	b.Reset()
	if err := WriteHTML(&b, &Report{Scenario: "idle"}); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, b.String())
	if !strings.Contains(b.String(), "No timeline recorded.") || strings.Contains(b.String(), "<svg") {
		t.Errorf("empty report:\n%s", b.String())
	}
}
