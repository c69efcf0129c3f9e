package loadtest

import (
	"context"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestConstantSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	s := ConstantSchedule(start, 1000)
	if got := s.At(0); !got.Equal(start) {
		t.Errorf("At(0) = %v", got)
	}
	if got := s.At(2500).Sub(start); got != 2500*time.Millisecond {
		t.Errorf("At(2500) at 1000/s = +%v", got)
	}
}

func TestPoissonSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	const n, rate = 200000, 500.0
	s := PoissonSchedule(start, rate, 7, 1)
	var sum, sumSq float64
	prev := start
	times := make([]time.Time, n)
	for i := range n {
		at := s.At(i)
		times[i] = at
		gap := at.Sub(prev).Seconds()
		if gap < 0 || (i == 0 && gap == 0) {
			t.Fatalf("arrival %d at %v, before or at the previous one %v", i, at, prev)
		}
		sum += gap
		sumSq += gap * gap
		prev = at
	}
	// Exponential gaps: mean 1/rate, standard deviation 1/rate too.
	mean := sum / n
	sd := math.Sqrt(sumSq/n - mean*mean)
	if math.Abs(mean*rate-1) > 0.01 {
		t.Errorf("mean gap %v, want %v", mean, 1/rate)
	}
	if math.Abs(sd*rate-1) > 0.02 {
		t.Errorf("gap standard deviation %v, want %v (exponential)", sd, 1/rate)
	}
	// The n-th arrival is near n/rate (within 4 standard deviations, √n/rate).
	if d := times[n-1].Sub(start).Seconds() - n/rate; math.Abs(d) > 4*math.Sqrt(n)/rate {
		t.Errorf("arrival %d at +%v s, want about %v", n-1, times[n-1].Sub(start).Seconds(), n/rate)
	}

	// The same seed and stream give the same times, also when asked out
	// of order; another stream or seed gives others.
	again := PoissonSchedule(start, rate, 7, 1)
	for _, i := range []int{10, 5, 0, 1999, 1000, n - 1} {
		if got := again.At(i); !got.Equal(times[i]) {
			t.Fatalf("seed 7 again: At(%d) = %v, first time %v", i, got, times[i])
		}
	}
	if PoissonSchedule(start, rate, 7, 2).At(0).Equal(times[0]) || PoissonSchedule(start, rate, 8, 1).At(0).Equal(times[0]) {
		t.Error("another stream or seed gave the same first arrival")
	}
}

func TestRampSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	const rate, ramp = 100.0, 2.0 // 100/s after 2 s; 100 arrivals during the ramp
	s := RampSchedule(start, rate, 2*time.Second)
	// The count of arrivals by t is the integral of the rate:
	// rate·t²/(2·ramp) during the ramp, then rate·ramp/2 + rate·(t − ramp).
	want := func(t float64) float64 {
		if t <= ramp {
			return rate * t * t / (2 * ramp)
		}
		return rate*ramp/2 + rate*(t-ramp)
	}
	count := func(upTo time.Time) int {
		n := 0
		for s.At(n).Before(upTo) || s.At(n).Equal(upTo) {
			n++
		}
		return n
	}
	for _, sec := range []float64{0.1, 0.5, 1, 1.5, 2, 2.5, 4} {
		got := count(start.Add(seconds(sec)))
		// Arrival n is at the time the integral reaches n, so n = 0..⌊N(t)⌋
		// have arrived by t: ⌊N(t)⌋ + 1, give or take rounding to 1 ns.
		if w := math.Floor(want(sec)) + 1; math.Abs(float64(got)-w) > 1 {
			t.Errorf("arrivals by +%vs: %d, want %v", sec, got, w)
		}
	}
	if got := s.At(0); !got.Equal(start) {
		t.Errorf("At(0) = %v", got)
	}
	if got := s.At(100).Sub(start); got != 2*time.Second {
		t.Errorf("At(100), the ramp's end, = +%v", got)
	}
	if got := s.At(300).Sub(start); got != 4*time.Second {
		t.Errorf("At(300) = +%v, want +4s", got)
	}
	// Rising: gaps shrink during the ramp, then stay 10 ms.
	if g1, g2 := s.At(2).Sub(s.At(1)), s.At(51).Sub(s.At(50)); g2 >= g1 {
		t.Errorf("gaps %v then %v: not rising", g1, g2)
	}
	if g := s.At(201).Sub(s.At(200)); g != 10*time.Millisecond {
		t.Errorf("gap after the ramp %v, want 10ms", g)
	}
	if c := RampSchedule(start, rate, 0); !c.At(7).Equal(ConstantSchedule(start, rate).At(7)) {
		t.Error("a ramp of 0 is not constant")
	}
}

func TestStepSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	s := StepSchedule(start, []Step{{10, time.Second}, {100, time.Second}, {0, time.Second}, {1000, time.Second}})
	for _, c := range []struct {
		n    int
		want time.Duration
	}{
		{0, 0},
		{5, 500 * time.Millisecond},
		{10, time.Second},              // the second step begins
		{60, 1500 * time.Millisecond},  // 10 + 50 at 100/s
		{110, 3 * time.Second},         // the pause (rate 0) is skipped
		{1110, 4 * time.Second},        // the last step's end
		{2110, 5 * time.Second},        // and its rate goes on
		{610, 3500 * time.Millisecond}, // halfway through the last step
	} {
		if got := s.At(c.n).Sub(start); got != c.want {
			t.Errorf("At(%d) = +%v, want +%v", c.n, got, c.want)
		}
	}
}

func TestConnSchedule(t *testing.T) {
	start := time.Unix(1000, 0)
	cfg := &Config{Arrival: "steps", Steps: []float64{10, 20}, StepDuration: time.Second, Seed: 3}
	if got := cfg.connSchedule(start, 999, 1).At(20).Sub(start); got != 1500*time.Millisecond {
		t.Errorf("steps: At(20) = +%v", got)
	}
	cfg.Arrival = "poisson"
	a, b := cfg.connSchedule(start, 100, 1).At(3), cfg.connSchedule(start, 100, 2).At(3)
	if a.Equal(b) || !cfg.connSchedule(start, 100, 1).At(3).Equal(a) {
		t.Errorf("poisson batches: %v %v", a, b)
	}
	cfg.Agent = 1
	if cfg.connSchedule(start, 100, 1).At(3).Equal(a) {
		t.Error("agent 1 drew agent 0's arrivals")
	}
}

func TestCheckSchedule(t *testing.T) {
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Arrival = "burst" }, `arrival "burst"`},
		{func(c *Config) { c.MsgArrival = "ramp" }, `message arrival "ramp"`},
		{func(c *Config) { c.Scenario, c.Arrival = "connect", "steps" }, "steps its rate itself"},
		{func(c *Config) { c.Scenario, c.Model = "fanout", "closed" }, "closed model"},
		{func(c *Config) { c.BodySize = 1 << 20 }, "body size"},
		{func(c *Config) { c.Think = -time.Second }, "think"},
	} {
		cfg := Config{URL: "ws://x", Key: []byte("k"), Scenario: "chat"}
		c.mod(&cfg)
		err := cfg.defaults()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", cfg, err, c.want)
		}
	}
	cfg := Config{URL: "ws://x", Key: []byte("k"), Scenario: "idle", Arrival: "ramp"}
	if err := cfg.defaults(); err != nil || cfg.Ramp != defaultRamp {
		t.Errorf("ramp default: %v, %v", err, cfg.Ramp)
	}
	cfg = Config{URL: "ws://x", Key: []byte("k"), Scenario: "chat", Model: "closed"}
	if err := cfg.defaults(); err != nil || cfg.Rate != 0 {
		t.Errorf("closed model: %v, rate %v (want 0: no cap)", err, cfg.Rate)
	}
}

func TestChatBody(t *testing.T) {
	at := time.Unix(1700000000, 123456789)
	bodies := func(seed int64, size int) []string {
		cr := &chatRun{cfg: &Config{Seed: seed, BodySize: size}}
		b := cr.bodies(&chatPair{idx: 3})
		var out []string
		for k := range 20 {
			out = append(out, b.next(at, k))
		}
		return out
	}
	plain := bodies(1, 0)
	if plain[7] != "1700000000123456789 7" {
		t.Errorf("unpadded body %q", plain[7])
	}
	a, b, other := bodies(1, 200), bodies(1, 200), bodies(2, 200)
	for k := range a {
		if len(a[k]) != 200 {
			t.Fatalf("body %d is %d bytes, want 200", k, len(a[k]))
		}
		if a[k] != b[k] {
			t.Fatalf("same seed, body %d differs", k)
		}
		if a[k] == other[k] {
			t.Fatalf("seeds 1 and 2 gave the same body %d", k)
		}
		f := strings.SplitN(a[k], " ", 3)
		if len(f) != 3 || f[0] != "1700000000123456789" || f[1] != strconv.Itoa(k) {
			t.Fatalf("body %d: %q", k, a[k][:30])
		}
		for _, c := range []byte(f[2]) {
			if c < '!' || c > '~' {
				t.Fatalf("body %d: padding byte %q", k, c)
			}
		}
	}
	// One byte over the stamp: an empty padding after the space.
	if got := bodies(1, len(plain[0])+1)[0]; got != plain[0]+" " {
		t.Errorf("stamp+1 body %q", got)
	}
}

// TestChatPoissonPadded runs chat with Poisson senders and padded bodies:
// about the scheduled count goes out and every message arrives whole.
func TestChatPoissonPadded(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "chat")
	cfg.Conns, cfg.Rate = 10, 100
	cfg.MsgArrival, cfg.BodySize = "poisson", 300
	r := mustRun(t, cfg, 30*time.Second)
	c := r.Chat
	// 100/s over 1.3 s: Poisson with mean 130, standard deviation 11.4.
	if c.Sent < 85 || c.Sent > 175 {
		t.Errorf("sent %d, want about 130", c.Sent)
	}
	if c.Acked != c.Sent || c.Received != c.Sent || c.Lost != 0 || c.Unacked != 0 || len(c.SendErrors) != 0 {
		t.Errorf("chat %+v", c)
	}
	if c.EndToEnd.Count == 0 || c.Ack.Count != c.EndToEnd.Count {
		t.Errorf("measured e2e %d ack %d", c.EndToEnd.Count, c.Ack.Count)
	}
}

// TestChatClosed runs the closed model: each sender waits for its ack
// and Think, so the count follows the think time, not a rate; with a rate
// cap, the cap.
func TestChatClosed(t *testing.T) {
	n, key := startNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	for _, c := range []struct {
		name   string
		rate   float64
		think  time.Duration
		lo, hi int64
	}{
		// 4 senders over 1.3 s: at most 1 + 1.3/0.05 = 27 each.
		{"think", 0, 50 * time.Millisecond, 4 * 8, 4 * 27},
		// Rate 20 caps 4 senders at one send per 200 ms: at most 7 each.
		{"cap", 20, 0, 4 * 4, 4 * 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := baseConfig(n, key, "chat")
			cfg.Seed = int64(len(c.name)) + 100 // users differ per subtest
			cfg.Conns, cfg.Model, cfg.Rate, cfg.Think = 4, "closed", c.rate, c.think
			r, err := Run(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			ch := r.Chat
			if ch.Sent < c.lo || ch.Sent > c.hi {
				t.Errorf("sent %d, want %d to %d", ch.Sent, c.lo, c.hi)
			}
			if ch.Acked != ch.Sent || ch.Received != ch.Sent || ch.Unacked != 0 || len(ch.SendErrors) != 0 {
				t.Errorf("chat %+v", ch)
			}
			if ch.LateSends != 0 {
				t.Errorf("closed model counted %d late sends: it has no schedule", ch.LateSends)
			}
			if ch.Ack.Count == 0 || ch.Ack.P50 > 1000 {
				t.Errorf("ack latency from the actual send %+v", ch.Ack)
			}
		})
	}
}

// TestArrivalRamp opens idle connections on a ramp: they cannot finish
// sooner than the ramp's schedule allows.
func TestArrivalRamp(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "idle")
	cfg.Conns, cfg.ConnectRate, cfg.Arrival, cfg.Ramp = 20, 100, "ramp", 500*time.Millisecond
	cfg.Duration, cfg.Settle = 100*time.Millisecond, -1
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Connection 19 is due at √(2·0.5·19/100) = 0.436 s: 20 connections
	// at no more than 20/0.436 = 46/s, against 100/s at a constant rate.
	if r.Connect.OK != 20 || r.Connect.AchievedRate > 46 || r.Connect.AchievedRate < 10 {
		t.Errorf("connect %+v", r.Connect)
	}

	cfg.Arrival, cfg.Seed = "poisson", 8
	if r, err = Run(ctx, cfg); err != nil || r.Connect.OK != 20 {
		t.Errorf("poisson arrivals: %v %+v", err, r.Connect)
	}
}
