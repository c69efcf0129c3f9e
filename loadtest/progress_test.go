package loadtest

import (
	"strings"
	"testing"
	"time"
)

func TestProgress(t *testing.T) {
	start := time.Now()
	rec := NewRecorder(start)
	var b strings.Builder
	rec.OnTick(NewProgress(&b, rec, "chat"))
	open := int64(0)
	rec.Gauge(GaugeOpen, func() int64 { return open })
	rec.Gauge(GaugeTarget, func() int64 { return 20 })

	// Second 1: connections open, nothing sent.
	open = 20
	rec.Add(CountConnOK, 20)
	rec.Add(PrefixConnErr+"timeout", 2)
	rec.Add(PrefixConnErr+"http_429", 1)
	rec.tick(start.Add(time.Second))
	// Second 2: messages, latency, a slow consumer and a read timeout.
	for i := range 100 { // p50 2 ms, p99 40 ms
		d := 2 * time.Millisecond
		if i >= 98 {
			d = 40 * time.Millisecond
		}
		rec.Hist(HistE2E).record(d)
	}
	rec.Hist(HistAck).record(time.Millisecond)
	rec.Add(CountSent, 101)
	rec.Add(CountReceived, 99)
	rec.Add(PrefixClose+"close_4001", 1)
	rec.Add(PrefixClose+"timeout", 1)
	rec.Add(PrefixSendErr+"rate_limited", 3)
	open = 18
	rec.tick(start.Add(2 * time.Second))
	// A last, half-second interval: rates are per second.
	rec.Add(CountSent, 50)
	rec.tick(start.Add(2500 * time.Millisecond))

	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{
		{"1s conns     20/20", "+20/s", "out      0/s in      0/s", "e2e p50       - p99       -", "err 3 dial:http_429=1 dial:timeout=2 (total 3)"},
		{"2s conns     18/20", "+0/s", "out    101/s in     99/s", "e2e p50  2.00ms p99  40.0ms", "err 5 closed:4001_slow=1 closed:read_timeout=1 send:rate_limited=3 (total 8)"},
		{"2s conns     18/20", "out    100/s in      0/s", "err 0 (total 8)"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d lacks %q:\n%s", i+1, w, lines[i])
			}
		}
	}
	// Stable columns: the latency column starts at the same offset.
	if a, b := strings.Index(lines[0], "e2e p50"), strings.Index(lines[1], "e2e p50"); a != b {
		t.Errorf("columns moved (%d, %d):\n%s\n%s", a, b, lines[0], lines[1])
	}

	// The primary histogram by scenario.
	for scenario, want := range map[string]string{"chat": HistE2E, "group": HistE2E, "fanout": HistFanoutLast, "idle": HistConnect, "storm": HistConnect} {
		var b strings.Builder
		NewProgress(&b, NewRecorder(start), scenario)(Tick{Interval: Interval{T: 1}})
		if !strings.Contains(b.String(), " "+want+" p50 ") {
			t.Errorf("%s: %q", scenario, b.String())
		}
	}
}
