package loadtest

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestFanout(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "fanout")
	cfg.Conns = 50 // subscribers
	cfg.Rate = 20  // publishes/s
	cfg.Duration = 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := r.Fanout
	var sb strings.Builder
	r.WriteSummary(&sb)
	t.Log("\n" + sb.String())

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
	if r.Version != ReportVersion || len(r.Timeline) < 2 {
		t.Errorf("report version %d, %d intervals", r.Version, len(r.Timeline))
	}
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
