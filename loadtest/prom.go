package loadtest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// promNS prefixes every metric the load tester exports.
const promNS = "parley_loadtest_"

// ServePrometheus serves rec's measurements at http://actualAddr/metrics
// in the Prometheus text format until stop is called (stop waits for the
// server to end; calling it again does nothing). An addr with port 0 picks
// a free port. What is exported, read from rec at every scrape:
//
//   - counters as parley_loadtest_<name>_total, except the counters by kind:
//     parley_loadtest_conn_errors_total{kind}, parley_loadtest_closes_total{kind}
//     and parley_loadtest_send_errors_total{code};
//   - parley_loadtest_connections{state="open"|"target"} and any other
//     gauge as parley_loadtest_<name>;
//   - every histogram as a summary parley_loadtest_latency_seconds{histogram}
//     with quantiles 0.5, 0.9, 0.99 and 0.999 over the run so far;
//   - parley_loadtest_elapsed_seconds since the recorder's start.
func ServePrometheus(addr string, rec *Recorder) (stop func(), actualAddr string, err error) {
	if addr == "" {
		return nil, "", errors.New("loadtest: no address to serve Prometheus metrics on")
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(recCollector{rec}); err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	mux := http.NewServeMux()
	// ContinueOnError: a scrape gets what could be gathered even if some
	// recorder name maps onto a family inconsistently.
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, WriteTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln) // returns http.ErrServerClosed after Shutdown
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if srv.Shutdown(ctx) != nil {
				_ = srv.Close()
			}
			<-done
		})
	}
	return stop, ln.Addr().String(), nil
}

// recCollector exports a Recorder. It is an unchecked collector (Describe
// sends nothing): the recorder's names are only known while it runs.
type recCollector struct{ rec *Recorder }

func (recCollector) Describe(chan<- *prometheus.Desc) {}

var (
	promLatency = prometheus.NewDesc(promNS+"latency_seconds",
		"Latency over the run so far, by histogram (see docs/loadtest.md).", []string{"histogram"}, nil)
	promConns = prometheus.NewDesc(promNS+"connections",
		"Connections open now, and the scenario's target.", []string{"state"}, nil)
	promElapsed = prometheus.NewDesc(promNS+"elapsed_seconds",
		"Time since the run started.", nil, nil)
)

// promKinds maps the recorder's counter prefixes to a labelled family.
var promKinds = []struct {
	prefix, family, label, help string
}{
	{PrefixConnErr, "conn_errors_total", "kind", "Failed connection attempts, by kind."},
	{PrefixClose, "closes_total", "kind", "Established connections the server or the network ended, by kind."},
	{PrefixSendErr, "send_errors_total", "code", "Error replies to sends, by code."},
}

func (c recCollector) Collect(ch chan<- prometheus.Metric) {
	// Counters: sum into series first, so names that sanitise alike make
	// one series instead of a duplicate.
	type series struct{ family, label, value string }
	sums := map[series]float64{}
	help := map[string]string{} // by family
counters:
	for name, v := range c.rec.Counters() {
		for _, k := range promKinds {
			if kind, ok := strings.CutPrefix(name, k.prefix); ok {
				sums[series{k.family, k.label, kind}] += float64(v)
				help[k.family] = k.help
				continue counters
			}
		}
		f := promName(name) + "_total"
		sums[series{family: f}] += float64(v)
		help[f] = "Load tester counter " + name + "."
	}
	for s, v := range sums {
		if s.label == "" {
			d := prometheus.NewDesc(promNS+s.family, help[s.family], nil, nil)
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
			continue
		}
		d := prometheus.NewDesc(promNS+s.family, help[s.family], []string{s.label}, nil)
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, s.value)
	}

	for name, v := range c.rec.Gauges() {
		switch name {
		case GaugeOpen:
			ch <- prometheus.MustNewConstMetric(promConns, prometheus.GaugeValue, float64(v), "open")
		case GaugeTarget:
			ch <- prometheus.MustNewConstMetric(promConns, prometheus.GaugeValue, float64(v), "target")
		default:
			d := prometheus.NewDesc(promNS+promName(name), "Load tester gauge "+name+".", nil, nil)
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
		}
	}

	for name, p := range c.rec.Metrics() {
		q := map[float64]float64{0.5: p.P50 / 1e3, 0.9: p.P90 / 1e3, 0.99: p.P99 / 1e3, 0.999: p.P999 / 1e3}
		ch <- prometheus.MustNewConstSummary(promLatency, uint64(p.Count), p.Mean*float64(p.Count)/1e3, q, name)
	}
	ch <- prometheus.MustNewConstMetric(promElapsed, prometheus.GaugeValue, time.Since(c.rec.Start()).Seconds())
}

// promName turns a recorder name into a metric name's tail: characters
// other than letters, digits and '_' become '_'.
func promName(name string) string {
	return strings.Map(func(r rune) rune {
		if r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, name)
}
