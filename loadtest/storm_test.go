package loadtest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-im/parley/client"
	"github.com/parley-im/parley/gateway"
	"github.com/parley-im/parley/internal/node"
)

func TestStorm(t *testing.T) {
	n, key := startNode(t)
	cfg := baseConfig(n, key, "storm")
	cfg.Conns, cfg.KillPercent = 100, 50
	cfg.Rate = 100 // 1/s per connection
	cfg.Warmup, cfg.Duration = 500*time.Millisecond, 2*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	watch := watchConns(ctx, n)
	r, err := Run(ctx, cfg)
	low, back := watch()
	if err != nil {
		t.Fatal(err)
	}
	s := r.Storm
	logSummary(t, r)

	if s.Conns != 100 || s.Killed != 50 || s.Reconnected != 50 || s.CaughtUp != 50 || s.Failed != 0 || len(s.Retries) != 0 {
		t.Errorf("conns %d killed %d reconnected %d caught up %d failed %d retries %v", s.Conns, s.Killed, s.Reconnected, s.CaughtUp, s.Failed, s.Retries)
	}
	// The server saw the storm: its connection count fell and came back to
	// 100 before the run closed them.
	if low > 60 || !back {
		t.Errorf("server connections: low %d, back to 100: %v", low, back)
	}
	if got := metric(t, n, `parley_connects_total{result="ok"`); got != 150 {
		t.Errorf("server counted %v successful connects, want 150", got)
	}
	if got := metric(t, n, "parley_syncs_total"); got < 50 || got != float64(s.SyncRounds) {
		t.Errorf("server answered %v syncs, the load tester sent %d", got, s.SyncRounds)
	}
	// Every recovery measured; the jitter alone spreads them over ~1 s.
	if s.Recover.Count != 50 || s.Reconnect.Count != 50 || r.Metrics[HistRecover].Count != 50 ||
		s.RecoverAll < 0.5 || s.RecoverAll > 5 || s.Recover.Max > 1000*s.RecoverAll+1 || s.Recover.Min < s.Reconnect.Min {
		t.Errorf("recover %+v reconnect %+v all %.3f s", s.Recover, s.Reconnect, s.RecoverAll)
	}
	// Nothing lost or duplicated; messages sent while away came by sync.
	if s.Lost != 0 || s.Stranded != 0 || s.Duplicated != 0 || s.Reordered != 0 || s.Unexpected != 0 || s.Unacked != 0 ||
		s.Received != s.Expected || s.Expected != s.Acked || s.Acked == 0 || s.Synced == 0 || len(s.SendErrors) != 0 {
		t.Errorf("messages %+v", s)
	}
	if got := metric(t, n, "parley_messages_sent_total"); got != float64(s.Acked) {
		t.Errorf("server stored %v messages, the load tester saw %d acked", got, s.Acked)
	}
	c := r.Counters
	if c[CountExpected] != s.Expected || c[CountReceived] != s.Received || c[CountLost] != 0 || c[CountDup] != 0 || c[CountAcked] != s.Acked || c[CountSent] != s.Sent {
		t.Errorf("recorder counters %v", c)
	}
}

// TestStormRateLimited cuts every connection of a server that takes few
// new connections per second: the reconnects meet 429s, back off and
// retry until all are back.
func TestStormRateLimited(t *testing.T) {
	n, key := startNodeWith(t, gateway.Config{ConnectRate: 10, ConnectBurst: 42})
	cfg := baseConfig(n, key, "storm")
	cfg.Conns, cfg.KillPercent, cfg.Rate = 40, 100, 20
	cfg.ConnectRate = 100
	cfg.Warmup, cfg.Duration = 300*time.Millisecond, time.Second
	r := mustRun(t, cfg, 60*time.Second)
	s := r.Storm
	var sb strings.Builder
	writeStorm(&sb, s)
	t.Log("\n" + sb.String())
	if s.Killed != 40 || s.CaughtUp != 40 || s.Failed != 0 || s.Retries["http_429"] == 0 || s.Lost != 0 || s.Duplicated != 0 {
		t.Errorf("killed %d caught up %d failed %d (%v) retries %v lost %d dup %d", s.Killed, s.CaughtUp, s.Failed, s.FailedKinds, s.Retries, s.Lost, s.Duplicated)
	}
	if got := metric(t, n, `parley_connects_total{result="rate_limited"`); got != float64(s.Retries["http_429"]) {
		t.Errorf("server refused %v connects, the load tester retried %d", got, s.Retries["http_429"])
	}
	if r.Counters[PrefixConnErr+"http_429"] != s.Retries["http_429"] {
		t.Errorf("recorder counted %d 429s", r.Counters[PrefixConnErr+"http_429"])
	}
}

func TestRetryable(t *testing.T) {
	for _, c := range []struct {
		err  error
		wait time.Duration
		ok   bool
	}{
		{&client.UpgradeError{StatusCode: http.StatusTooManyRequests, Body: `{"error":{"code":"rate_limited","retry_after_ms":120}}`}, 120 * time.Millisecond, true},
		{&client.UpgradeError{StatusCode: http.StatusServiceUnavailable}, 0, true},
		{&client.UpgradeError{StatusCode: http.StatusForbidden}, 0, false},
		{&client.CloseError{Code: 4005}, 0, true},
		{&client.CloseError{Code: 4000, ReconnectAfter: time.Second}, time.Second, true},
		{&client.CloseError{Code: 4500}, 0, false},
		{errors.New("client: read: connection reset by peer"), 0, true},
		{context.Canceled, 0, false},
	} {
		wait, ok := retryable(c.err)
		if wait != c.wait || ok != c.ok {
			t.Errorf("%v: %v %v, want %v %v", c.err, wait, ok, c.wait, c.ok)
		}
	}
}

// watchConns polls the server's connection count until ctx ends or the
// returned func is called, which reports the lowest count after it first
// reached its peak, and whether it came back to that peak afterwards.
func watchConns(ctx context.Context, n *node.Node) func() (low int, back bool) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	peak, low := 0, -1
	back := false
	wg.Go(func() {
		for ctx.Err() == nil {
			c := n.Gateway().Connections()
			switch {
			case c > peak:
				peak, low, back = c, -1, false
			case low < 0 || c < low:
				low = c
			case c == peak && low >= 0:
				back = true
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return func() (int, bool) {
		cancel()
		wg.Wait()
		return low, back
	}
}
