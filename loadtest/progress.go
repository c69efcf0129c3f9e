package loadtest

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// NewProgress returns a tick handler for rec.OnTick that writes one line
// per interval to w, columns in a fixed order:
//
//	12s conns   1000/1000     +250/s  out   1000/s in    998/s  e2e p50  1.23ms p99  4.56ms  err 2 closed:4001_slow=2 (total 5)
//
// elapsed time; connections open/target (gauges) and connects per second;
// messages sent and received per second; p50 and p99 of the scenario's
// primary histogram this interval ("-" without samples); errors this interval,
// by kind (dial:<kind> connect errors, closed:<kind> connections the server
// or the network ended, send:<code> error replies) and the run's total,
// read from rec.
func NewProgress(w io.Writer, rec *Recorder, scenario string) func(Tick) {
	hist := primaryHist(scenario)
	prev := 0.0 // the last interval's end; owned by the ticking goroutine
	return func(tk Tick) {
		// Rates per second of this interval (the last one of a run is
		// usually shorter than a second).
		dt := tk.T - prev
		prev = tk.T
		if dt <= 0 {
			dt = 1
		}
		rate := func(counter string) float64 { return float64(tk.Counters[counter]) / dt }
		var b strings.Builder
		fmt.Fprintf(&b, "%5.0fs conns %6d/%-6d %+6.0f/s  out %6.0f/s in %6.0f/s  %s p50 %7s p99 %7s",
			tk.T, tk.Gauges[GaugeOpen], tk.Gauges[GaugeTarget], rate(CountConnOK), rate(CountSent), rate(CountReceived),
			hist, fmtLive(tk.Latency, hist, func(p Percentiles) float64 { return p.P50 }),
			fmtLive(tk.Latency, hist, func(p Percentiles) float64 { return p.P99 }))
		errs, _ := errorCounts(tk.Counters)
		fmt.Fprintf(&b, "  err %d", errs)
		for _, k := range slices.Sorted(maps.Keys(tk.Counters)) {
			if label := errLabel(k); label != "" && tk.Counters[k] != 0 {
				fmt.Fprintf(&b, " %s=%d", label, tk.Counters[k])
			}
		}
		if total, _ := errorCounts(rec.Counters()); total > 0 {
			fmt.Fprintf(&b, " (total %d)", total)
		}
		b.WriteByte('\n')
		io.WriteString(w, b.String())
	}
}

// fmtLive formats one value of hist's interval distribution, "-" if the
// interval has no samples.
func fmtLive(lat map[string]Percentiles, hist string, v func(Percentiles) float64) string {
	p, ok := lat[hist]
	if !ok || p.Count == 0 {
		return "-"
	}
	return fmtMillis(v(p))
}

// fmtMillis formats milliseconds compactly with a unit: 850us, 1.23ms,
// 12.3ms, 1.23s.
func fmtMillis(ms float64) string {
	switch {
	case ms < 1:
		return fmt.Sprintf("%.0fus", ms*1000)
	case ms < 10:
		return fmt.Sprintf("%.2fms", ms)
	case ms < 1000:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.2fs", ms/1000)
}

// errLabel names an error counter for the progress line, "" if the
// counter does not count errors. Sorting the counters' names sorts the
// labels by group: closed (close.), dial (conn_error.), send (send_error.).
func errLabel(counter string) string {
	if kind, ok := strings.CutPrefix(counter, PrefixConnErr); ok {
		return "dial:" + kind
	}
	if kind, ok := strings.CutPrefix(counter, PrefixClose); ok {
		switch kind {
		case "timeout":
			kind = "read_timeout"
		case "close_4001":
			kind = "4001_slow"
		default:
			kind = strings.TrimPrefix(kind, "close_")
		}
		return "closed:" + kind
	}
	if code, ok := strings.CutPrefix(counter, PrefixSendErr); ok {
		return "send:" + code
	}
	return ""
}
