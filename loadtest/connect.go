package loadtest

import (
	"context"
	"fmt"
	"time"
)

// runConnect runs the connect-rate steps.
func runConnect(ctx context.Context, cfg *Config, r *Report) error {
	d := newDialer(cfg)
	r.Conns = 0 // counted per step
	for si, rate := range cfg.Steps {
		n := int(rate * cfg.StepDuration.Seconds())
		if n < 1 {
			n = 1
		}
		lo, hi := cfg.share(n) // this agent's part of the step
		n, rate = hi-lo, rate*float64(hi-lo)/float64(n)
		tokens, err := mintTokens(d, cfg, fmt.Sprintf("c%d-", si), n, time.Hour)
		if err != nil {
			return err
		}
		if err := cfg.together(ctx, fmt.Sprintf("step-%d", si)); err != nil { // the agents' steps start together
			return err
		}
		if n == 0 {
			r.Steps = append(r.Steps, ConnectStats{})
			continue
		}
		logf(cfg, "connect: step %.0f/s, %d connections", rate, n)
		res := d.openAll(ctx, n, rate, tokens, nil, false)
		s := connectStats(rate, n, res)
		r.Steps = append(r.Steps, s)
		r.Conns += n
		logf(cfg, "connect: step %.0f/s achieved %.0f/s, %d ok", rate, s.AchievedRate, s.OK)
		if s.Met {
			r.LastMet = rate
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		sleep(ctx, time.Second) // let the server finish closing
	}
	return nil
}
