package gateway

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connected         prometheus.Gauge
	connects          *prometheus.CounterVec
	connectsOK        prometheus.Counter // connects{result="ok"}, resolved once: it counts every connection
	connectSeconds    prometheus.Histogram
	closes            *prometheus.CounterVec
	framesIn          *prometheus.CounterVec
	framesOut         prometheus.Counter
	errors            *prometheus.CounterVec
	rateLimited       prometheus.Counter
	slowConsumers     prometheus.Counter
	ephemeralReplaced prometheus.Counter
	ephemeralDropped  prometheus.Counter
	writeErrors       prometheus.Counter
	httpRequests      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected:      prometheus.NewGauge(prometheus.GaugeOpts{Name: "parley_connections", Help: "Open websocket sessions."}),
		connects:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_connects_total", Help: "Websocket connection attempts by result."}, []string{"result"}),
		connectSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "parley_connect_seconds", Help: "Upgrade request to session registered, auth included.", Buckets: prometheus.ExponentialBuckets(0.0001, 2.5, 12)}),
		closes:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_closes_total", Help: "Connections closed by the server, by reason."}, []string{"reason"}),
		framesIn:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_frames_in_total", Help: "Client frames handled, by type."}, []string{"type"}),
		framesOut:      prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_frames_out_total", Help: "Frames written to clients."}),
		errors:         prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_errors_total", Help: "Error frames and HTTP errors sent, by code."}, []string{"code"}),
		rateLimited:    prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_rate_limited_total", Help: "Frames refused by a rate limit."}),
		slowConsumers:  prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_slow_consumer_disconnects_total", Help: "Connections closed because their durable queue overflowed."}),
		ephemeralReplaced: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_queue_drops_total",
			Help: "Ephemeral frames replaced by a newer value before being written (stale values dropped)."}),
		ephemeralDropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_queue_evictions_total",
			Help: "Ephemeral frames evicted because a connection had too many distinct pending keys."}),
		writeErrors:  prometheus.NewCounter(prometheus.CounterOpts{Name: "parley_write_errors_total", Help: "Socket writes that failed or timed out."}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "parley_http_requests_total", Help: "HTTP API requests by route and status."}, []string{"route", "status"}),
	}
	m.connectsOK = m.connects.WithLabelValues("ok")
	if reg != nil {
		reg.MustRegister(m.connected, m.connects, m.connectSeconds, m.closes, m.framesIn, m.framesOut, m.errors,
			m.rateLimited, m.slowConsumers, m.ephemeralReplaced, m.ephemeralDropped, m.writeErrors, m.httpRequests)
	}
	return m
}
