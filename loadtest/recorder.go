package loadtest

import (
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Metric names shared by the scenarios, the live progress line, the
// Prometheus endpoint, the reports and --slo.
const (
	// Histograms (milliseconds in reports).
	HistConnect    = "connect"     // scheduled arrival → hello (TCP, upgrade, auth)
	HistAck        = "ack"         // intended send time → the sender's ack
	HistE2E        = "e2e"         // intended send time → a receiver's read
	HistFanoutLast = "fanout_last" // intended publish time → the last live subscriber's read
	HistFanoutAll  = "fanout_all"  // intended publish time → each subscriber's read
	HistPing       = "ping_rtt"    // client ping → pong
	HistSubscribe  = "subscribe"   // sub request → reply
	HistRecover    = "recover"     // reconnect storm: kill → reconnected and caught up

	// Counters.
	CountConnOK    = "conns_opened"
	CountConnClose = "conns_closed" // established connections that ended
	CountSent      = "sent"
	CountAcked     = "acked"
	CountReceived  = "received"
	CountLate      = "late_sends"
	// Delivery bookkeeping, added by each scenario at its end: messages
	// that should have been received (acked × recipients), and those lost
	// (acked, never received), duplicated and received out of order.
	CountExpected  = "expected"
	CountLost      = "lost"
	CountDup       = "duplicated"
	CountReordered = "reordered"
	// Prefixes of counters by kind: connect errors by kind (timeout,
	// refused, addr_not_available, http_429, close_4500, ...), close codes
	// of established connections, error codes in replies.
	PrefixConnErr = "conn_error."
	PrefixClose   = "close."
	PrefixSendErr = "send_error."

	// Gauges.
	GaugeTarget = "conns_target"
	GaugeOpen   = "conns_open"
)

// Histogram range: 1 µs to 5 minutes, 3 significant digits.
const (
	histMin  = 1
	histMax  = int64(5 * time.Minute / time.Microsecond)
	histSig  = 3
	interval = time.Second
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histSig) }

// Interval is one second of a run: what happened in it.
type Interval struct {
	// T is the interval's end in seconds since the run's start.
	T float64 `json:"t"`
	// Latency holds the interval's distribution of each histogram that
	// recorded anything in it.
	Latency map[string]Percentiles `json:"latency,omitempty"`
	// Counters holds each counter's increase over the interval.
	Counters map[string]int64 `json:"counters,omitempty"`
	// Gauges holds each gauge's value at the interval's end.
	Gauges map[string]int64 `json:"gauges,omitempty"`
}

// Tick is an interval with its raw histograms, which agents send to the
// coordinator (merging percentiles would lose information; merging
// histograms does not).
type Tick struct {
	Interval
	Hists map[string]*hdrhistogram.Histogram
}

// Recorder collects a run's measurements: latency histograms and counters
// by name, cumulative and per one-second interval, and gauges read at each
// interval's end. Recording is safe from any goroutine.
type Recorder struct {
	start time.Time

	mu       sync.RWMutex             // read-locked only to look up a histogram or counter
	hists    map[string]*latency      // guarded by mu (the map)
	counters map[string]*atomic.Int64 // guarded by mu (the map)
	gauges   map[string]func() int64  // guarded by mu
	prev     map[string]int64         // guarded by mu; counter values at the last tick
	timeline []Interval               // guarded by mu
	onTick   []func(Tick)             // guarded by mu

	stop chan struct{}
	done chan struct{}
}

// NewRecorder returns a recorder whose intervals count from start.
func NewRecorder(start time.Time) *Recorder {
	return &Recorder{
		start:    start,
		hists:    map[string]*latency{},
		counters: map[string]*atomic.Int64{},
		gauges:   map[string]func() int64{},
		prev:     map[string]int64{},
	}
}

// Start returns the time intervals count from.
func (r *Recorder) Start() time.Time { return r.start }

// Hist returns the named histogram, creating it on first use. Looking up
// one that exists takes only a read lock: the scenarios call it (and Add)
// on every message.
func (r *Recorder) Hist(name string) *latency {
	r.mu.RLock()
	h := r.hists[name]
	r.mu.RUnlock()
	if h != nil {
		return h
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	h = r.hists[name]
	if h == nil {
		h = newLatency()
		h.cur = newHist()
		r.hists[name] = h
	}
	return h
}

// Counter returns the named counter, creating it on first use.
func (r *Recorder) Counter(name string) *atomic.Int64 {
	r.mu.RLock()
	c := r.counters[name]
	r.mu.RUnlock()
	if c != nil {
		return c
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c = r.counters[name]
	if c == nil {
		c = new(atomic.Int64)
		r.counters[name] = c
	}
	return c
}

// Add adds n to the named counter.
func (r *Recorder) Add(name string, n int64) { r.Counter(name).Add(n) }

// addDelivery adds a scenario's delivery bookkeeping at its end: the
// CountExpected, CountLost, CountDup and CountReordered counters.
func (r *Recorder) addDelivery(expected, lost, dup, reordered int64) {
	r.Add(CountExpected, expected)
	r.Add(CountLost, lost)
	r.Add(CountDup, dup)
	r.Add(CountReordered, reordered)
}

// Gauge registers a gauge read at every interval's end (and by Gauges).
func (r *Recorder) Gauge(name string, read func() int64) {
	r.mu.Lock()
	r.gauges[name] = read
	r.mu.Unlock()
}

// OnTick registers fn to be called with every interval, on the ticking
// goroutine, in order.
func (r *Recorder) OnTick(fn func(Tick)) {
	r.mu.Lock()
	r.onTick = append(r.onTick, fn)
	r.mu.Unlock()
}

// Run ticks every second until Stop. It is started by the scenarios' runner.
func (r *Recorder) Run() {
	r.mu.Lock()
	if r.stop != nil {
		r.mu.Unlock()
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	r.stop, r.done = stop, done
	r.mu.Unlock()
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				r.tick(time.Now())
			case <-stop:
				r.tick(time.Now())
				return
			}
		}
	}()
}

// Stop ends Run after one last tick. Safe to call more than once, or
// without Run.
func (r *Recorder) Stop() {
	r.mu.Lock()
	stop, done := r.stop, r.done
	r.stop = nil
	r.mu.Unlock()
	if stop == nil {
		return
	}
	close(stop)
	<-done
}

// tick closes the current interval.
func (r *Recorder) tick(now time.Time) {
	r.mu.Lock()
	tk := Tick{
		Interval: Interval{T: now.Sub(r.start).Seconds(), Counters: map[string]int64{}},
		Hists:    map[string]*hdrhistogram.Histogram{},
	}
	for name, h := range r.hists {
		cur := h.take()
		if cur.TotalCount() == 0 {
			continue
		}
		if tk.Latency == nil {
			tk.Latency = map[string]Percentiles{}
		}
		tk.Latency[name] = percentilesOf(cur)
		tk.Hists[name] = cur
	}
	for name, c := range r.counters {
		v := c.Load()
		if d := v - r.prev[name]; d != 0 {
			tk.Counters[name] = d
		}
		r.prev[name] = v
	}
	if len(r.gauges) > 0 {
		tk.Gauges = make(map[string]int64, len(r.gauges))
		for name, g := range r.gauges {
			tk.Gauges[name] = g()
		}
	}
	r.timeline = append(r.timeline, tk.Interval)
	fns := slices.Clone(r.onTick)
	r.mu.Unlock()
	for _, fn := range fns {
		fn(tk)
	}
}

// Timeline returns the intervals so far.
func (r *Recorder) Timeline() []Interval {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.timeline)
}

// Counters returns every counter's current value.
func (r *Recorder) Counters() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int64, len(r.counters))
	for k, c := range r.counters {
		out[k] = c.Load()
	}
	return out
}

// Gauges returns every gauge's current value.
func (r *Recorder) Gauges() map[string]int64 {
	r.mu.Lock()
	gs := maps.Clone(r.gauges)
	r.mu.Unlock()
	out := make(map[string]int64, len(gs))
	for k, g := range gs {
		out[k] = g()
	}
	return out
}

// Metrics returns every histogram's cumulative distribution.
func (r *Recorder) Metrics() map[string]Percentiles {
	return eachHist(r, func(h *latency) (Percentiles, bool) {
		p := h.percentiles()
		return p, p.Count > 0
	})
}

// Histograms returns a copy of every cumulative histogram.
func (r *Recorder) Histograms() map[string]*hdrhistogram.Histogram {
	return eachHist(r, func(h *latency) (*hdrhistogram.Histogram, bool) { return h.copy(), true })
}

// eachHist returns fn of every histogram of r by name, leaving out those
// fn reports false for. fn runs without r.mu held.
func eachHist[T any](r *Recorder, fn func(*latency) (T, bool)) map[string]T {
	r.mu.Lock()
	hs := maps.Clone(r.hists)
	r.mu.Unlock()
	out := make(map[string]T, len(hs))
	for k, h := range hs {
		if v, ok := fn(h); ok {
			out[k] = v
		}
	}
	return out
}

// Absorb adds an interval recorded elsewhere (an agent's) into the
// cumulative histograms and counters. The coordinator uses it; timeline
// rows are merged by the caller.
func (r *Recorder) Absorb(hists map[string]*hdrhistogram.Histogram, counters map[string]int64) {
	for name, h := range hists {
		r.Hist(name).merge(h)
	}
	for name, d := range counters {
		r.Counter(name).Add(d)
	}
}

// SetTimeline replaces the timeline (the coordinator's merged one).
func (r *Recorder) SetTimeline(t []Interval) {
	r.mu.Lock()
	r.timeline = t
	r.mu.Unlock()
}

// fill copies the recorder's totals into the report.
func (r *Recorder) fill(rep *Report) {
	rep.Version = ReportVersion
	rep.Metrics = r.Metrics()
	rep.Counters = r.Counters()
	rep.Timeline = r.Timeline()
}
