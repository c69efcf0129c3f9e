package node

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

func TestFloorPercent(t *testing.T) {
	const mib = 1 << 20
	for _, tt := range []struct {
		percent                int
		min, live, stk, global uint64
		want                   int
	}{
		{50, 0, 10 * mib, 0, 0, 50},                    // no floor
		{50, 64 * mib, 0, 0, 0, 1600},                  // nothing measured yet: the minimum decides
		{50, 64 * mib, 0, 256 << 10, 1 * mib, 1600},    // start-up: kept to 4 MiB × 16
		{50, 64 * mib, 2 * mib, 0, 0, 1600},            // 2 + 2 × 16 < 64: the minimum's 64 decides
		{50, 64 * mib, 4 * mib, 0, 0, 1501},            // 4 + 4 × 15.01 ≥ 64
		{50, 64 * mib, 8 * mib, 6 * mib, 2 * mib, 351}, // 8 + 16 × 3.51 ≥ 64
		{50, 64 * mib, 43 * mib, 0, 0, 50},             // 43 × 1.5 = 64.5: percent's goal is above
		{50, 64 * mib, 200 * mib, 50 * mib, 0, 50},     // at scale percent decides
		{100, 64 * mib, 40 * mib, 0, 0, 100},
	} {
		got := floorPercent(tt.percent, tt.min, tt.live, tt.stk, tt.global)
		if got != tt.want {
			t.Errorf("floorPercent(%d, %d MiB, live %d MiB) = %d, want %d", tt.percent, tt.min/mib, tt.live/mib, got, tt.want)
		}
		// The runtime's goal: at least the floor, and about the floor
		// when the floor decides.
		base := tt.live + tt.stk + tt.global
		goal := max(tt.live+base*uint64(got)/100, heapMinimum*uint64(got)/100)
		if tt.min > 0 && (goal < tt.min || got != tt.percent && goal > tt.min+tt.min/50) {
			t.Errorf("floorPercent(%d, %d MiB, live %d MiB) = %d: goal %d MiB", tt.percent, tt.min/mib, tt.live/mib, got, goal/mib)
		}
	}
}

// With a floor, the runtime's heap goal is at least the floor after a
// cycle; stopping restores the plain percent.
func TestSetGCFloor(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	const floor = 256 << 20
	stop := SetGC(50, floor)
	goal := []metrics.Sample{{Name: "/gc/heap/goal:bytes"}}
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		metrics.Read(goal)
		if g := goal[0].Value.Uint64(); g >= floor {
			if g > floor+floor/4 {
				t.Fatalf("heap goal %d MiB, far above the floor %d MiB", g>>20, floor>>20)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("heap goal %d MiB, floor %d MiB", goal[0].Value.Uint64()>>20, floor>>20)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if p := debug.SetGCPercent(50); p != 50 {
		t.Fatalf("percent after stop: %d", p)
	}
}
