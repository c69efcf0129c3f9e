package loadtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync/atomic"
	"time"

	"github.com/parley-im/parley/protocol"
)

// Schedule gives the intended times of an open model's arrivals
// (connections or messages). Arrival n, from 0, is due at At(n) whatever
// happened to the arrivals before it: a stalled server then shows in the
// latency measured from these times instead of slowing the load down
// (coordinated omission).
//
// A Schedule is not safe for concurrent use; asking for n in increasing
// order is the cheap way (Poisson draws its gaps in order).
type Schedule interface {
	At(n int) time.Time
}

// Arrival processes Config.Arrival accepts; MsgArrival takes the first two.
var (
	ConnArrivals = []string{"constant", "poisson", "ramp", "steps"}
	MsgArrivals  = []string{"constant", "poisson"}
)

// Random streams: with Config.Seed they make a run's random draws
// reproducible, each consumer drawing from its own PCG stream so that one
// draws the same numbers however the others interleave with it.
const (
	streamConns uint64 = 1 << 56 // + agent<<32 + openAll call: connection arrivals
	streamSends uint64 = 2 << 56 // + agent<<32 + pair: a chat sender's message arrivals
	streamBody  uint64 = 3 << 56 // + agent<<32 + pair: a chat sender's body padding
)

// CountDropped counts scheduled sends that never left because the
// connection failed before their time (the open model's schedule ran on).
const CountDropped = "dropped_sends"

// ConstantSchedule returns evenly spaced arrivals, rate per second: arrival
// n at start + n/rate.
func ConstantSchedule(start time.Time, rate float64) Schedule {
	return constantSchedule{start, rate}
}

type constantSchedule struct {
	start time.Time
	rate  float64
}

func (s constantSchedule) At(n int) time.Time { return arrival(s.start, s.rate, int64(n)) }

// PoissonSchedule returns a Poisson process of rate arrivals per second
// from start: independent exponential gaps of mean 1/rate, the first one
// before arrival 0. The gaps come from a PCG generator seeded with seed and
// stream, so the same pair gives the same times.
func PoissonSchedule(start time.Time, rate float64, seed int64, stream uint64) Schedule {
	s := &poissonSchedule{start: start, rate: rate, seed: uint64(seed), stream: stream}
	s.reset()
	return s
}

type poissonSchedule struct {
	start        time.Time
	rate         float64
	seed, stream uint64

	rng  *rand.Rand
	last int     // the arrival t is the time of; -1 before the first draw
	t    float64 // seconds after start
}

func (s *poissonSchedule) reset() {
	s.rng = rand.New(rand.NewPCG(s.seed, s.stream))
	s.last, s.t = -1, 0
}

func (s *poissonSchedule) At(n int) time.Time {
	if n < s.last {
		s.reset()
	}
	for s.last < n {
		s.t += s.rng.ExpFloat64() / s.rate
		s.last++
	}
	return s.start.Add(seconds(s.t))
}

// RampSchedule returns arrivals whose rate rises linearly from 0 at start
// to rate at start+ramp and stays there: arrival n is at the time t where
// the integral of the rate from start reaches n, that is
// t = sqrt(2·ramp·n/rate) during the ramp (rate·ramp/2 arrivals) and
// ramp + (n − rate·ramp/2)/rate after it. A ramp ≤ 0 is constant.
func RampSchedule(start time.Time, rate float64, ramp time.Duration) Schedule {
	if ramp <= 0 {
		return ConstantSchedule(start, rate)
	}
	return rampSchedule{start, rate, ramp.Seconds()}
}

type rampSchedule struct {
	start time.Time
	rate  float64
	ramp  float64 // seconds
}

func (s rampSchedule) At(n int) time.Time {
	x, inRamp := float64(n), s.rate*s.ramp/2
	if x <= inRamp {
		return s.start.Add(seconds(math.Sqrt(2 * s.ramp * x / s.rate)))
	}
	return s.start.Add(seconds(s.ramp + (x-inRamp)/s.rate))
}

// Step is one piece of a StepSchedule: Rate arrivals per second for Dur.
type Step struct {
	Rate float64
	Dur  time.Duration
}

// StepSchedule returns piecewise constant arrivals: each step's rate for
// its duration, one after the other; the last step's rate goes on past its
// end. A step with rate 0 is a pause. The last step's rate must be
// positive.
func StepSchedule(start time.Time, steps []Step) Schedule {
	return stepSchedule{start, steps}
}

type stepSchedule struct {
	start time.Time
	steps []Step
}

func (s stepSchedule) At(n int) time.Time {
	x, t := float64(n), 0.0 // arrivals left to place; seconds from start
	for i, st := range s.steps {
		d := st.Dur.Seconds()
		if i == len(s.steps)-1 || x < st.Rate*d {
			return s.start.Add(seconds(t + x/st.Rate))
		}
		x -= st.Rate * d
		t += d
	}
	return s.start // no steps: everything at once
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// connSchedule returns the schedule of connection arrivals (Arrival) from
// start at rate per second; stream tells several batches' Poisson draws
// apart.
func (c *Config) connSchedule(start time.Time, rate float64, stream uint64) Schedule {
	switch c.Arrival {
	case "poisson":
		return PoissonSchedule(start, rate, c.Seed, streamConns+uint64(c.Agent)<<32+stream)
	case "ramp":
		return RampSchedule(start, rate, c.Ramp)
	case "steps":
		steps := make([]Step, len(c.Steps))
		for i, r := range c.Steps {
			steps[i] = Step{Rate: r, Dur: c.StepDuration}
		}
		return StepSchedule(start, steps)
	}
	return ConstantSchedule(start, rate)
}

// defaultRamp is Config.Ramp's default with the ramp arrival.
const defaultRamp = 10 * time.Second

// checkSchedule checks the arrival, model and body settings, after the
// scenario's defaults are in.
func (c *Config) checkSchedule() error {
	if !slices.Contains(ConnArrivals, c.Arrival) {
		return fmt.Errorf("loadtest: arrival %q: want one of %v", c.Arrival, ConnArrivals)
	}
	if !slices.Contains(MsgArrivals, c.MsgArrival) {
		return fmt.Errorf("loadtest: message arrival %q: want one of %v", c.MsgArrival, MsgArrivals)
	}
	if c.Arrival == "steps" && c.Scenario == "connect" {
		return errors.New("loadtest: the connect scenario steps its rate itself: use arrival constant, poisson or ramp")
	}
	if c.Arrival == "ramp" && c.Ramp <= 0 {
		c.Ramp = defaultRamp
	}
	if c.Model == "closed" && c.Scenario != "chat" {
		return fmt.Errorf("loadtest: the closed model is built for the chat scenario only, not %s", c.Scenario)
	}
	if c.Think < 0 {
		return fmt.Errorf("loadtest: think time %v is negative", c.Think)
	}
	if c.BodySize < 0 || c.BodySize > protocol.MaxBody {
		return fmt.Errorf("loadtest: body size %d: want 0 to %d bytes", c.BodySize, protocol.MaxBody)
	}
	return nil
}

// sendSlots is how many messages one chat sender may send in window, the
// size of its bookkeeping: the constant schedule's count, with room for a
// Poisson schedule's variation (8 standard deviations) or, in the closed
// model without a rate cap, a start that grows as needed.
func sendSlots(c *Config, window time.Duration) int {
	if c.Model == "closed" && c.Rate <= 0 {
		return 64
	}
	mean := c.Rate * window.Seconds() / float64(c.Conns)
	if c.Model == "open" && c.MsgArrival == "poisson" {
		mean += 8*math.Sqrt(mean) + 8
	}
	return int(math.Ceil(mean)) + 1
}

// runClock is a message scenario's T0 and the end of its warm-up, unix ns.
// begin stores both before any send; the event handlers read them.
type runClock struct {
	start   atomic.Int64 // T0
	measure atomic.Int64 // T0 + warm-up
}

// begin waits for the scenario's schedule to start (Config.scheduleStart
// at phase), stores T0 and returns it.
func (rc *runClock) begin(ctx context.Context, cfg *Config, phase string) (time.Time, error) {
	t0, err := cfg.scheduleStart(ctx, phase)
	if err != nil {
		return t0, err
	}
	rc.start.Store(t0.UnixNano())
	rc.measure.Store(t0.Add(cfg.Warmup).UnixNano())
	return t0, nil
}

// record records in h the latency to now of a message intended at at
// (unix ns), if at is after the warm-up: latencies cover those alone.
func (rc *runClock) record(h *latency, at int64, now time.Time) {
	if at >= rc.measure.Load() {
		h.record(now.Sub(time.Unix(0, at)))
	}
}
