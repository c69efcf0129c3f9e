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
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// latency is a concurrency-safe HdrHistogram of durations, recorded in
// microseconds from 1 µs to 5 minutes with 3 significant digits.
type latency struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram // guarded by mu
}

func newLatency() *latency {
	return &latency{h: hdrhistogram.New(1, int64(5*time.Minute/time.Microsecond), 3)}
}

func (l *latency) record(d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	l.mu.Lock()
	_ = l.h.RecordValue(us) // values beyond the range are dropped; 5 min is enough
	l.mu.Unlock()
}

func (l *latency) percentiles() Percentiles {
	l.mu.Lock()
	defer l.mu.Unlock()
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Percentiles{
		Count: l.h.TotalCount(),
		P50:   ms(l.h.ValueAtQuantile(50)),
		P90:   ms(l.h.ValueAtQuantile(90)),
		P99:   ms(l.h.ValueAtQuantile(99)),
		P999:  ms(l.h.ValueAtQuantile(99.9)),
		Max:   ms(l.h.Max()),
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
