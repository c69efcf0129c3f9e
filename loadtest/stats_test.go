package loadtest

import (
	"net/netip"
	"testing"
	"time"
)

func TestArrival(t *testing.T) {
	start := time.Unix(1000, 0)
	if got := arrival(start, 1000, 0); !got.Equal(start) {
		t.Errorf("arrival 0 = %v", got)
	}
	if got := arrival(start, 1000, 2500); got.Sub(start) != 2500*time.Millisecond {
		t.Errorf("arrival 2500 at 1000/s = +%v", got.Sub(start))
	}
	// Chat: 4 senders at 100/s overall: sender 1's messages are 40 ms
	// apart, 10 ms after sender 0's; all slots are distinct and dense.
	seen := map[int64]bool{}
	for j := 0; j < 4; j++ {
		for k := 0; k < 5; k++ {
			seen[chatSlot(j, k, 4)] = true
		}
	}
	for n := int64(0); n < 20; n++ {
		if !seen[n] {
			t.Fatalf("slot %d unused", n)
		}
	}
	a, b := arrival(start, 100, chatSlot(1, 0, 4)), arrival(start, 100, chatSlot(1, 1, 4))
	if a.Sub(start) != 10*time.Millisecond || b.Sub(a) != 40*time.Millisecond {
		t.Errorf("sender 1: first at +%v, gap %v", a.Sub(start), b.Sub(a))
	}
}

func TestPercentiles(t *testing.T) {
	l := newLatency()
	for i := 1; i <= 1000; i++ {
		l.record(time.Duration(i) * time.Millisecond)
	}
	p := l.percentiles()
	near := func(name string, got, want float64) {
		if got < want*0.99 || got > want*1.01 {
			t.Errorf("%s = %v ms, want %v", name, got, want)
		}
	}
	if p.Count != 1000 {
		t.Errorf("count %d", p.Count)
	}
	near("p50", p.P50, 500)
	near("p90", p.P90, 900)
	near("p99", p.P99, 990)
	near("p99.9", p.P999, 999)
	near("max", p.Max, 1000)
	l.record(0) // clamps to 1 µs rather than being lost
	if l.percentiles().Count != 1001 {
		t.Error("zero duration not recorded")
	}
}

func TestParseAddrRange(t *testing.T) {
	a, err := ParseAddrRange("127.0.0.2-127.0.0.5, 10.0.0.1")
	if err != nil || len(a) != 5 || a[0] != netip.MustParseAddr("127.0.0.2") || a[3] != netip.MustParseAddr("127.0.0.5") || a[4] != netip.MustParseAddr("10.0.0.1") {
		t.Fatalf("got %v, %v", a, err)
	}
	for _, bad := range []string{"127.0.0.5-127.0.0.2", "x", "127.0.0.1-y"} {
		if _, err := ParseAddrRange(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCPUUse(t *testing.T) {
	c := cpuUse(time.Second, 3*time.Second, time.Second, 2)
	if c.Utilization != 1 || !c.Saturated {
		t.Errorf("%+v", c)
	}
	if c := cpuUse(0, time.Second, 2*time.Second, 2); c.Saturated || c.Utilization != 0.25 {
		t.Errorf("%+v", c)
	}
}
