package loadtest

import (
	"testing"
	"time"
)

func TestPresence(t *testing.T) {
	n, key := startNode(t) // the server's default 1 s coalescing window
	cfg := baseConfig(n, key, "presence")
	cfg.Conns = 30 // 6 circles of 5
	cfg.ChurnRate = 10
	cfg.Warmup, cfg.Duration = 300*time.Millisecond, 1700*time.Millisecond
	r := mustRun(t, cfg, 30*time.Second)
	p := r.Presence
	logSummary(t, r)

	if p.Users != 30 || p.Circles != 6 || p.WatchPairs != 30*4 {
		t.Errorf("%d users in %d circles, %d watch pairs", p.Users, p.Circles, p.WatchPairs)
	}
	// 10/s over 2 s: 20 churns, each a close and a reopen.
	if p.Churns < 19 || p.Churns > 21 || p.Skipped != 0 || p.ReconnectFailed != 0 || p.Transitions != 2*p.Churns {
		t.Errorf("churns %d skipped %d failed %d transitions %d", p.Churns, p.Skipped, p.ReconnectFailed, p.Transitions)
	}
	// Every transition is observed or accounted for, none missing.
	if p.TransitionPairs != 4*p.Transitions || p.TransitionPairs != p.WatcherAway+p.Expected ||
		p.Expected != p.Observed+p.Coalesced+p.CutShort+p.Missing {
		t.Errorf("accounting does not add up: %+v", p)
	}
	// Nothing may be missing: a watch is answered with the state the
	// server last published, so a flap it coalesces away cannot leave a
	// watcher stale (it did when watch answered the live state).
	if p.Missing != 0 || p.MissingAfterWatch != 0 || p.OutOfOrder != 0 || p.Unmatched != 0 || len(p.WatchErrors) != 0 ||
		p.DrainTimedOut != (p.Missing > 0) {
		t.Errorf("missing %d (after a watch %d) out of order %d unmatched %d drain timed out %v watch errors %v",
			p.Missing, p.MissingAfterWatch, p.OutOfOrder, p.Unmatched, p.DrainTimedOut, p.WatchErrors)
	}
	// Off times spread over 0..2 s around a 1 s window: some cycles are
	// seen, some coalesced away.
	if p.Observed == 0 || p.Coalesced == 0 {
		t.Errorf("observed %d coalesced %d: want both", p.Observed, p.Coalesced)
	}
	if p.Latency.Count == 0 || p.Latency.Count > p.Observed || p.Online.Count+p.Offline.Count != p.Latency.Count || r.Metrics[HistPresence].Count != p.Latency.Count {
		t.Errorf("latency %+v (online %d offline %d) of %d observed; recorder %+v", p.Latency, p.Online.Count, p.Offline.Count, p.Observed, r.Metrics[HistPresence])
	}
	if p.Reconnect.Count != p.Churns || r.Metrics[HistConnect].Count != 30+p.Churns {
		t.Errorf("reconnects %d, connects %d; churns %d", p.Reconnect.Count, r.Metrics[HistConnect].Count, p.Churns)
	}
	if got := metric(t, n, `parley_connects_total{result="ok"`); got != float64(30+p.Churns) {
		t.Errorf("server counted %v successful connects, want %d", got, 30+p.Churns)
	}
	if c := r.Counters; c[CountExpected] != p.Expected || c[CountLost] != p.Missing || c[CountReordered] != 0 {
		t.Errorf("recorder counters %v", c)
	}
}

// TestPresenceAccounting feeds accountPair made-up timelines.
func TestPresenceAccounting(t *testing.T) {
	ms := func(v int64) int64 { return v * int64(time.Millisecond) }
	on := func(begin, hello int64) presTrans { return presTrans{online: true, begin: ms(begin), ref: ms(hello)} }
	off := func(at int64) presTrans { return presTrans{begin: ms(at), ref: ms(at)} }
	snap := func(sess int32, online bool, at int64) presObs {
		return presObs{sess: sess, kind: obsSnapshot, online: online, at: ms(at)}
	}
	ev := func(sess int32, online bool, at int64) presObs {
		return presObs{sess: sess, kind: obsEvent, online: online, at: ms(at)}
	}
	closed := func(sess int32, at int64) presObs { return presObs{sess: sess, kind: obsClose, at: ms(at)} }
	// The user: connected at 0, off at 1000, on 1100-1110 (a flap), off
	// at 3000, on 5000-5010.
	trans := []presTrans{on(0, 0), off(1000), on(1100, 1110), off(3000), on(5000, 5010)}
	for _, c := range []struct {
		name string
		obs  []presObs
		want presCounts
		lat  []time.Duration
	}{{
		name: "flap coalesced, the rest seen",
		obs:  []presObs{snap(0, true, 10), ev(0, true, 1005), ev(0, false, 4000), ev(0, true, 6000)},
		want: presCounts{pairs: 4, expected: 4, observed: 2, coalesced: 2, repeated: 1},
		lat:  []time.Duration{1000 * time.Millisecond, 990 * time.Millisecond},
	}, {
		name: "the last change never came",
		obs:  []presObs{snap(0, true, 10), ev(0, false, 4000)},
		want: presCounts{pairs: 4, expected: 4, observed: 1, coalesced: 2, missing: 1},
		lat:  []time.Duration{1000 * time.Millisecond},
	}, {
		name: "a flap at the end is net zero",
		obs:  []presObs{snap(0, true, 10), ev(0, false, 2000), ev(0, true, 2100)},
		want: presCounts{pairs: 4, expected: 4, observed: 2, coalesced: 2},
		lat:  []time.Duration{1000 * time.Millisecond, 990 * time.Millisecond},
	}, {
		name: "stale offline after the later online",
		obs:  []presObs{snap(0, true, 10), ev(0, true, 6000), ev(0, false, 6100)},
		want: presCounts{pairs: 4, expected: 4, observed: 1, coalesced: 3, outOfOrder: 1},
		lat:  []time.Duration{990 * time.Millisecond},
	}, {
		name: "the watcher left and came back",
		// Session 0 sees the off at 1000, is closed at 2000 (the flap
		// before it was not shown yet: cut short), session 1 watches from
		// 3500 (the off at 3000 happened while away) and sees the on.
		obs:  []presObs{snap(0, true, 10), ev(0, false, 1500), closed(0, 2000), snap(1, false, 3500), ev(1, true, 6000)},
		want: presCounts{pairs: 4, away: 1, expected: 3, observed: 2, cutShort: 1},
		lat:  []time.Duration{500 * time.Millisecond, 990 * time.Millisecond},
	}, {
		name: "a watch inside a coalesced flap",
		// Watched at 1050 while the user was away; the flap 1000-1110 was
		// never published, so no event corrects the answer.
		obs:  []presObs{snap(0, false, 1050)},
		want: presCounts{pairs: 4, away: 1, expected: 3, coalesced: 2, missing: 1, missingAfterWatch: 1},
	}, {
		name: "a failed watch is time away",
		obs:  []presObs{snap(0, true, 10), closed(0, 2000), ev(1, true, 6000)},
		want: presCounts{pairs: 4, away: 2, expected: 2, cutShort: 2},
	}} {
		var lat []time.Duration
		got := accountPair(trans, c.obs, func(_ presTrans, d time.Duration) { lat = append(lat, d) })
		if got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
		if len(lat) != len(c.lat) {
			t.Errorf("%s: latencies %v, want %v", c.name, lat, c.lat)
			continue
		}
		for i := range lat {
			if lat[i] != c.lat[i] {
				t.Errorf("%s: latencies %v, want %v", c.name, lat, c.lat)
				break
			}
		}
	}
}
