package loadtest

import (
	"context"
	"fmt"
	"time"
)

// runIdle opens cfg.Conns connections, reads memory, and holds them.
func runIdle(ctx context.Context, cfg *Config, r *Report) error {
	cfg = cfg.agentPart(false)
	d := newDialer(cfg)
	tokens, err := mintTokens(d, cfg, "i", cfg.Conns, cfg.Duration+cfg.Settle+time.Hour)
	if err != nil {
		return err
	}
	switch {
	case len(cfg.ServerPIDs) > 1: // a cluster's servers: their sum
		r.Server = readBeforeSum(cfg.ServerPIDs)
	case cfg.ServerPID > 0:
		r.Server = readBefore(cfg.ServerPID)
	}
	r.Tester = readBefore(0)
	logf(cfg, "idle: opening %d connections at %.0f/s", cfg.Conns, cfg.ConnectRate)
	res := d.openAll(ctx, cfg.Conns, cfg.ConnectRate, tokens, nil, true)
	defer res.close()
	cs := connectStats(cfg.ConnectRate, cfg.Conns, res)
	r.Connect = &cs
	logf(cfg, "idle: %d connected (%.0f conn/s); settling %v", cs.OK, cs.AchievedRate, cfg.Settle)
	sleep(ctx, cfg.Settle)
	up := res.alive()
	if r.Server != nil {
		r.Server.readAfter()
		r.Server.finish(up)
	}
	r.Tester.readAfter()
	r.Tester.finish(up)
	logf(cfg, "idle: holding %d connections for %v", up, cfg.Duration)
	sleep(ctx, cfg.Duration)
	r.Dropped = up - res.alive()
	if int(cs.OK) < cfg.Conns {
		r.Warnings = append(r.Warnings, fmt.Sprintf("only %d of %d connections opened", cs.OK, cfg.Conns))
	}
	return ctx.Err()
}

// mintTokens mints n tokens for distinct users "lt<seed>-<prefix><i>"
// ("lt<seed>-a<agent>-<prefix><i>" in a distributed run), or takes the
// tokens file's first n (see dialer.tokenFor).
func mintTokens(d *dialer, cfg *Config, prefix string, n int, ttl time.Duration) ([]string, error) {
	if err := d.needTokens(n); err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i := range out {
		t, _, err := d.tokenFor(i, userID(cfg, prefix, i), "d", ttl)
		if err != nil {
			return nil, err
		}
		out[i] = t
	}
	return out, nil
}

func userID(cfg *Config, prefix string, i int) string {
	if cfg.Agents > 1 {
		return fmt.Sprintf("lt%d-a%d-%s%d", cfg.Seed, cfg.Agent, prefix, i)
	}
	return fmt.Sprintf("lt%d-%s%d", cfg.Seed, prefix, i)
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
