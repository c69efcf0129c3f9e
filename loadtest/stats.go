package loadtest

import (
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// arrival returns the intended time of the n-th arrival (n from 0) of an
// open-model schedule starting at start with rate arrivals per second.
func arrival(start time.Time, rate float64, n int64) time.Time {
	return start.Add(time.Duration(float64(n) * float64(time.Second) / rate))
}

// chatSlot maps message k of sender j (of senders) to its global arrival
// number: senders take turns, so the total rate is even and each sender
// sends every senders/rate seconds.
func chatSlot(j, k, senders int) int64 { return int64(k)*int64(senders) + int64(j) }

// Percentiles summarises a latency distribution in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	P9999 float64 `json:"p99_99_ms"`
	Max   float64 `json:"max_ms"`
}

// latency is a concurrency-safe HdrHistogram of durations, recorded in
// microseconds from 1 µs to 5 minutes with 3 significant digits. One made
// by a Recorder also records into the current interval's histogram (cur).
type latency struct {
	mu  sync.Mutex
	h   *hdrhistogram.Histogram // guarded by mu; cumulative
	cur *hdrhistogram.Histogram // guarded by mu; this interval, nil if none
}

func newLatency() *latency { return &latency{h: newHist()} }

func (l *latency) record(d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	l.mu.Lock()
	_ = l.h.RecordValue(us) // values beyond the range are dropped; 5 min is enough
	if l.cur != nil {
		_ = l.cur.RecordValue(us)
	}
	l.mu.Unlock()
}

// take returns the current interval's histogram and starts a new one.
func (l *latency) take() *hdrhistogram.Histogram {
	fresh := newHist()
	l.mu.Lock()
	cur := l.cur
	l.cur = fresh
	l.mu.Unlock()
	if cur == nil {
		cur = newHist()
	}
	return cur
}

// merge adds h's counts to the cumulative histogram (and the interval's).
func (l *latency) merge(h *hdrhistogram.Histogram) {
	l.mu.Lock()
	l.h.Merge(h)
	if l.cur != nil {
		l.cur.Merge(h)
	}
	l.mu.Unlock()
}

func (l *latency) copy() *hdrhistogram.Histogram {
	l.mu.Lock()
	defer l.mu.Unlock()
	return hdrhistogram.Import(l.h.Export())
}

func (l *latency) percentiles() Percentiles {
	l.mu.Lock()
	defer l.mu.Unlock()
	return percentilesOf(l.h)
}

// percentilesOf summarises a histogram of microseconds in milliseconds.
func percentilesOf(h *hdrhistogram.Histogram) Percentiles {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		P9999: ms(h.ValueAtQuantile(99.99)),
		Max:   ms(h.Max()),
	}
}

// counts is a concurrency-safe count by kind.
type counts struct {
	mu sync.Mutex
	m  map[string]int64 // guarded by mu
}

func (c *counts) add(kind string) {
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]int64{}
	}
	c.m[kind]++
	c.mu.Unlock()
}

func (c *counts) snapshot() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, len(c.m))
	for k, v := range c.m {
		out[k] = v
	}
	return out
}
