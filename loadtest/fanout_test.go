package loadtest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/loadtest/lean"
	"github.com/parley-im/parley/protocol"
)

func TestFanout(t *testing.T) {
	if c := (Config{URL: "ws://x", Key: []byte("k"), Scenario: "fanout"}); c.defaults() != nil || c.Client != "lean" {
		t.Errorf("fanout's default client is %q, want lean", c.Client)
	}
	for _, client := range []string{"lean", "full"} {
		t.Run(client, func(t *testing.T) { testFanout(t, client) })
	}
}

// testFanout runs the scenario with client's subscribers against a real
// server and checks the books against the server's metrics.
func testFanout(t *testing.T, client string) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "fanout")
	cfg.Client = client
	var log lockedLog
	cfg.Log = &log
	cfg.Conns = 50 // subscribers
	cfg.Rate = 20  // publishes/s
	cfg.Duration = 2 * time.Second
	r := mustRun(t, cfg, 60*time.Second)
	f := r.Fanout
	if want := "subscriber connections (" + client + " client)"; !strings.Contains(log.String(), want) {
		t.Errorf("log does not say %q:\n%s", want, log.String())
	}
	logSummary(t, r)

	// 20/s over 2.3 s: 46 scheduled publishes, 40 of them measured.
	if f.Published < 44 || f.Published > 48 || f.Measured < 38 || f.Measured > 42 {
		t.Errorf("published %d measured %d, want about 46 and 40", f.Published, f.Measured)
	}
	if f.Subscribers != 50 || f.Expected != 50*f.Published || f.Subscribe.Count != 50 || len(f.SubscribeErrors) != 0 {
		t.Errorf("subscribers %d expected %d subscribed %d (%v)", f.Subscribers, f.Expected, f.Subscribe.Count, f.SubscribeErrors)
	}
	// Zero missed events, and the counts add up.
	if f.Received != f.Expected || f.Coalesced != 0 || f.NotReceived != 0 || f.Duplicates != 0 || f.Reordered != 0 ||
		f.Received+f.Coalesced+f.NotReceived != f.Expected {
		t.Errorf("delivery: expected %d received %d coalesced %d not received %d dup %d reordered %d",
			f.Expected, f.Received, f.Coalesced, f.NotReceived, f.Duplicates, f.Reordered)
	}
	if f.MinPerSub != f.Published || f.MaxPerSub != f.Published || f.SubsMissing != 0 || f.Incomplete != 0 {
		t.Errorf("per subscriber %d..%d, %d missing, %d incomplete; want %d each", f.MinPerSub, f.MaxPerSub, f.SubsMissing, f.Incomplete, f.Published)
	}
	if f.Disconnected != 0 || f.DrainTimedOut || len(f.PublishErrors) != 0 || len(f.SubscriberErrors) != 0 || f.Unexpected != 0 {
		t.Errorf("disconnected %d drain timed out %v publish errors %v subscriber errors %v unexpected %d",
			f.Disconnected, f.DrainTimedOut, f.PublishErrors, f.SubscriberErrors, f.Unexpected)
	}
	// One completion time per measured publish, one latency per subscriber
	// and measured publish.
	if f.LastMember.Count != f.Measured || f.FirstMember.Count != f.Measured || f.AllMembers.Count != 50*f.Measured {
		t.Errorf("counts: last %d first %d all %d, measured %d", f.LastMember.Count, f.FirstMember.Count, f.AllMembers.Count, f.Measured)
	}
	if f.LastMember.P50 <= 0 || f.FirstMember.Max > f.LastMember.Max || f.AllMembers.Max != f.LastMember.Max || f.LastMember.P50 < f.FirstMember.P50 {
		t.Errorf("percentiles: last %+v first %+v all %+v", f.LastMember, f.FirstMember, f.AllMembers)
	}
	if f.ServerStamp.Count != f.Measured {
		t.Errorf("server stamps %d, want %d", f.ServerStamp.Count, f.Measured)
	}
	if f.ServerCPU == nil || f.ServerCPU.Unavailable != "" || f.ServerCPU.WallSeconds < 1.5 || f.TesterCPU == nil {
		t.Errorf("cpu: server %+v tester %+v", f.ServerCPU, f.TesterCPU)
	}
	if len(r.Warnings) != 0 {
		t.Errorf("warnings: %q", r.Warnings)
	}

	// The server agrees: every publish was accepted and fanned out, every
	// event written, nothing replaced or evicted.
	if got := metric(t, n, "parley_topic_publishes_total"); got != float64(f.Published) {
		t.Errorf("server counted %v publishes, the load tester sent %d", got, f.Published)
	}
	if got := metric(t, n, "parley_topic_events_total"); got != float64(f.Published) {
		t.Errorf("server fanned out %v events, want %d", got, f.Published)
	}
	if got := metric(t, n, "parley_queue_drops_total") + metric(t, n, "parley_queue_evictions_total"); got != 0 {
		t.Errorf("server replaced or evicted %v pending values", got)
	}

	// The JSON report is one flat object with the fan-out figures.
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var flat struct {
		Scenario string `json:"scenario"`
		Conns    int    `json:"conns"`
		Fanout   struct {
			Received int64 `json:"received"`
		} `json:"fanout"`
	}
	if err := json.Unmarshal(b, &flat); err != nil || flat.Scenario != "fanout" || flat.Conns != 51 || flat.Fanout.Received != f.Received {
		t.Errorf("json %s: %+v %v", b, flat, err)
	}
	// The recorder saw the same deliveries as the per-subscriber books, and
	// a completion time for every complete measured publish.
	if got := r.Counters[CountReceived]; got != f.Received {
		t.Errorf("recorder counted %d received, books %d", got, f.Received)
	}
	if got := r.Metrics[HistFanoutLast].Count; got != f.LastMember.Count {
		t.Errorf("recorder has %d fan-out completions, books %d", got, f.LastMember.Count)
	}
	if c := r.Counters; c[CountExpected] != f.Expected || c[CountLost] != f.NotReceived || c[CountDup] != f.Duplicates || c[CountReordered] != f.Reordered {
		t.Errorf("recorder expected %d lost %d dup %d reordered %d; books %d %d %d %d", c[CountExpected], c[CountLost], c[CountDup], c[CountReordered],
			f.Expected, f.NotReceived, f.Duplicates, f.Reordered)
	}
	if got := r.Metrics[HistSubscribe].Count; got != 50 {
		t.Errorf("recorder has %d subscribe latencies, want 50", got)
	}
	// The server handled one sub frame per subscriber and refused nothing.
	if got := metric(t, n, `parley_frames_in_total{type="sub"`); got != 50 {
		t.Errorf("server handled %v sub frames, want 50", got)
	}
	if got := metric(t, n, "parley_errors_total"); got != 0 {
		t.Errorf("server sent %v errors", got)
	}
	if r.Version != ReportVersion || len(r.Timeline) < 2 {
		t.Errorf("report version %d, %d intervals", r.Version, len(r.Timeline))
	}
}

// lockedLog is a Config.Log that keeps what it is given.
type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder // guarded by mu
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestFanoutCoalesced checks the bookkeeping of values a subscriber never
// got: a gap before a later value is coalesced, a missing tail is not
// received, and the totals still add up.
func TestFanoutCoalesced(t *testing.T) {
	fr := &fanRun{cfg: &Config{Rate: 10}, stampLat: newLatency(), t0: time.Unix(100, 0)}
	fr.measure.Store(time.Unix(100, 0).UnixNano())
	const n = 5
	full := &fanSub{lat: []int64{1e6, 2e6, 3e6, 4e6, 5e6}, maxSeen: 4}
	gappy := &fanSub{lat: []int64{1e6, 0, 0, 9e6, 0}, maxSeen: 3}
	fr.subs = []*fanSub{full, gappy}
	var fs FanoutStats
	fr.tally(&fs, n, time.Unix(100, 0))
	if fs.Expected != 10 || fs.Received != 7 || fs.Coalesced != 2 || fs.NotReceived != 1 ||
		fs.Received+fs.Coalesced+fs.NotReceived != fs.Expected {
		t.Errorf("counts %+v", fs)
	}
	if fs.SubsMissing != 1 || fs.MinPerSub != 2 || fs.MaxPerSub != 5 || fs.Incomplete != 3 || fs.Measured != 5 {
		t.Errorf("per subscriber %+v", fs)
	}
	// Complete publishes 0 and 3: last member 1 ms and 9 ms.
	near := func(got, want float64) bool { return got >= want && got < want*1.01 } // HdrHistogram: 3 digits
	if fs.LastMember.Count != 2 || !near(fs.LastMember.Max, 9) || fs.AllMembers.Count != 7 || !near(fs.FirstMember.Max, 4) {
		t.Errorf("latencies last %+v first %+v all %+v", fs.LastMember, fs.FirstMember, fs.AllMembers)
	}
}

func TestParseFanEvent(t *testing.T) {
	for _, c := range []struct {
		in   string
		seq  int
		sent int64
		ok   bool
	}{
		{`{"type":"event","topic":"bench.x","data":{"seq":12,"sent":1767222003000000001},"from":"u","ts":1767222003000}`, 12, 1767222003000000001, true},
		{`{"type":"event","topic":"bench.x","data":{"sent":5,"seq":3},"ts":1}`, 3, 5, true}, // other key order
		{`{"type":"event","topic":"bench.x","data":{"lat":1},"ts":1}`, 0, 0, false},
		{`{"type":"event","topic":"bench.x","data":{"seq":"x","sent":1},"ts":1}`, 0, 0, false},
	} {
		seq, sent, ok := parseFanEvent([]byte(c.in))
		if seq != c.seq || sent != c.sent || ok != c.ok {
			t.Errorf("%s: %d %d %v", c.in, seq, sent, ok)
		}
	}
}

// TestFanoutLeanAllocs checks that an event costs a lean subscriber no
// allocation: onLeanMessage parses the frame in place and books it, on the
// longest path (the stamping subscriber, a measured value, the last member).
func TestFanoutLeanAllocs(t *testing.T) {
	const runs = 1000
	cfg := &Config{Rate: 10, Recorder: NewRecorder(time.Now()), MaxInFlight: 10}
	fr := newFanRun(cfg, "bench.t", 2, runs+1)
	sent := time.Now().UnixNano()
	frames := make([][]byte, runs+1) // AllocsPerRun runs once more to warm up
	for k := range frames {
		frames[k] = protocol.AppendEvent(nil, "bench.t", fmt.Appendf(nil, `{"seq":%d,"sent":%d}`, k, sent), "u", sent/1e6)
	}
	stamper, other := &lean.Conn{Tag: 0}, &lean.Conn{Tag: 1}
	k := 0
	allocs := testing.AllocsPerRun(runs, func() {
		fr.onLeanMessage(stamper, frames[k])
		fr.onLeanMessage(other, frames[k])
		k++
	})
	if allocs != 0 {
		t.Errorf("%v allocations per event", allocs)
	}
	if got := fr.received.Load(); got != 2*int64(k) || fr.unexp.Load() != 0 || fr.last.percentiles().Count != int64(k) || fr.stampLat.percentiles().Count != int64(k) {
		t.Errorf("received %d of %d, unexpected %d, completions %d, stamps %d", got, 2*k, fr.unexp.Load(), fr.last.percentiles().Count, fr.stampLat.percentiles().Count)
	}
}

// TestFanoutLeanReplies checks how lean subscribers' replies and closes
// are booked: a result is a subscription, an error with the sub's id a
// subscribe error by code, an error without it a subscriber error, a
// second reply unexpected; a connection that ends with its sub pending
// fails it; the run's own close is no disconnection. Every outcome frees
// its request's slot.
func TestFanoutLeanReplies(t *testing.T) {
	cfg := &Config{Rate: 10, Recorder: NewRecorder(time.Now()), MaxInFlight: 4}
	fr := newFanRun(cfg, "bench.t", 3, 10)
	fr.subsStart = time.Now()
	for _, s := range fr.subs {
		s.subAt.Store(1)
		fr.subSlots <- struct{}{}
	}
	conn := func(tag int32) *lean.Conn { return &lean.Conn{Tag: tag} }
	fr.onLeanMessage(conn(0), []byte(`{"type":"result","id":"0"}`))
	fr.onLeanMessage(conn(1), []byte(`{"type":"error","id":"1","code":"forbidden","message":"no"}`))
	fr.onLeanMessage(conn(2), []byte(`{"type":"error","code":"rate_limited","message":"slow down"}`))
	fr.onLeanMessage(conn(0), []byte(`{"type":"result","id":"0"}`))
	fr.onLeanClose(conn(2), 4000, nil)
	fr.onLeanClose(conn(0), 0, lean.ErrClosed)
	subErrs, subErr, disc := fr.subErrs.snapshot(), fr.subErr.snapshot(), fr.disc.snapshot()
	if n := fr.subLat.percentiles().Count; n != 1 || len(subErrs) != 2 || subErrs["forbidden"] != 1 || subErrs["close_4000"] != 1 {
		t.Errorf("subscribed %d, subscribe errors %v", n, subErrs)
	}
	if len(subErr) != 1 || subErr["rate_limited"] != 1 || fr.unexp.Load() != 1 || len(disc) != 1 || disc["close_4000"] != 1 {
		t.Errorf("subscriber errors %v, unexpected %d, disconnections %v", subErr, fr.unexp.Load(), disc)
	}
	if n := len(fr.subSlots); n != 0 {
		t.Errorf("%d slots still taken", n)
	}
}
