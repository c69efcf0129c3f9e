package loadtest

import (
	"net/http"
	"testing"
	"time"
)

// The endpoint reads the recorder at every scrape (TestChatOutputs scrapes
// one during a run).
func TestServePrometheus(t *testing.T) {
	rec := NewRecorder(time.Now())
	rec.Gauge(GaugeOpen, func() int64 { return 7 })
	rec.Gauge(GaugeTarget, func() int64 { return 10 })
	stop, addr, err := ServePrometheus("127.0.0.1:0", rec)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	rec.Add(CountConnOK, 7)
	rec.Add(CountSent, 5)
	rec.Add(PrefixConnErr+"timeout", 2)
	rec.Add(PrefixConnErr+"addr_not_available", 1)
	rec.Add(PrefixClose+"close_4001", 3)
	rec.Add(PrefixSendErr+"rate_limited", 4)
	rec.Add("odd.name-1", 6)
	for i := 1; i <= 100; i++ {
		rec.Hist(HistE2E).record(time.Duration(i) * time.Millisecond)
	}
	got := scrape(t, "http://"+addr+"/metrics")
	for name, want := range map[string]float64{
		`parley_loadtest_conns_opened_total`:                                7,
		`parley_loadtest_sent_total`:                                        5,
		`parley_loadtest_conn_errors_total{kind="timeout"}`:                 2,
		`parley_loadtest_conn_errors_total{kind="addr_not_available"}`:      1,
		`parley_loadtest_closes_total{kind="close_4001"}`:                   3,
		`parley_loadtest_send_errors_total{code="rate_limited"}`:            4,
		`parley_loadtest_odd_name_1_total`:                                  6,
		`parley_loadtest_connections{state="open"}`:                         7,
		`parley_loadtest_connections{state="target"}`:                       10,
		`parley_loadtest_latency_seconds_count{histogram="e2e"}`:            100,
		`parley_loadtest_latency_seconds{histogram="e2e",quantile="0.5"}`:   0.050,
		`parley_loadtest_latency_seconds{histogram="e2e",quantile="0.9"}`:   0.090,
		`parley_loadtest_latency_seconds{histogram="e2e",quantile="0.99"}`:  0.099,
		`parley_loadtest_latency_seconds{histogram="e2e",quantile="0.999"}`: 0.100,
		`parley_loadtest_latency_seconds_sum{histogram="e2e"}`:              5.050,
	} {
		v, ok := got[name]
		if !ok {
			t.Errorf("no %s in %v", name, got)
			continue
		}
		if d := v - want; d > want/100 || d < -want/100 { // HdrHistogram: 3 significant digits
			t.Errorf("%s = %v, want %v", name, v, want)
		}
	}
	if got[`parley_loadtest_elapsed_seconds`] <= 0 {
		t.Errorf("elapsed %v", got[`parley_loadtest_elapsed_seconds`])
	}

	// A second scrape sees the run go on.
	rec.Add(CountSent, 1)
	if v := scrape(t, "http://"+addr+"/metrics")[`parley_loadtest_sent_total`]; v != 6 {
		t.Errorf("sent %v after another send, want 6", v)
	}

	stop()
	stop() // idempotent
	if resp, err := http.Get("http://" + addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("still serving after stop")
	}
	if _, _, err := ServePrometheus("", rec); err == nil {
		t.Error("served without an address")
	}
}
