package node

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// SetGC sets the Go GC target to percent (as GOGC) with a floor: the GC
// does not run before the heap reaches minHeap bytes, whatever percent
// gives. It returns a function that stops the floor's upkeep.
//
// A gateway's heap is mostly long-lived connection state, so a low percent
// saves memory per connection at scale. But while the heap is small (few
// connections, or a reconnect storm's connections that close within
// milliseconds), percent alone sets the GC to run after every few MiB of
// allocation, and the GC's fixed work per cycle (stacks, globals, the
// phases themselves) dominates the CPU of every connection. With the
// floor, a small heap is collected when it reaches minHeap; once percent's
// goal is above minHeap (about minHeap/(1+percent/100) live), the floor
// does nothing and percent alone decides, so memory per connection at
// scale is unchanged.
//
// The runtime has no such floor, so it is kept by re-tuning the GC percent
// after every cycle (from a finalizer, which runs once per cycle).
func SetGC(percent int, minHeap uint64) (stop func()) {
	debug.SetGCPercent(percent)
	if minHeap == 0 || percent < 0 {
		return func() {}
	}
	f := &gcFloor{percent: percent, minHeap: minHeap, current: percent, samples: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}}
	f.tune()
	f.arm()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.stopped = true
		debug.SetGCPercent(percent)
	}
}

type gcFloor struct {
	percent int    // static
	minHeap uint64 // static

	mu      sync.Mutex
	stopped bool             // guarded by mu
	current int              // guarded by mu
	samples []metrics.Sample // guarded by mu
}

// gcCycle is an object that only exists to be collected: its finalizer
// runs once per GC cycle. It holds a pointer so that it is not packed with
// other objects by the tiny allocator.
type gcCycle struct{ _ *int }

func (f *gcFloor) arm() {
	runtime.SetFinalizer(new(gcCycle), func(*gcCycle) {
		if f.tune() {
			f.arm()
		}
	})
}

// tune sets the percent for the next cycle; false once stopped.
func (f *gcFloor) tune() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	metrics.Read(f.samples)
	for _, s := range f.samples {
		if s.Value.Kind() != metrics.KindUint64 {
			return true // not this runtime's metrics: leave percent alone
		}
	}
	p := floorPercent(f.percent, f.minHeap, f.samples[0].Value.Uint64(), f.samples[1].Value.Uint64(), f.samples[2].Value.Uint64())
	if p != f.current {
		f.current = p
		debug.SetGCPercent(p)
	}
	return true
}

// heapMinimum is the runtime's least heap goal at GOGC=100; it scales with
// the percent.
const heapMinimum = 4 << 20

// floorPercent is the GC percent whose heap goal is percent's, or about
// minHeap if that is more. The runtime's goal is
//
//	max(live + (live + stacks + globals) × p/100, heapMinimum × p/100)
//
// so p is also kept to where the second term is at most minHeap: with
// little live heap (at start-up, say) the first term would ask for a huge
// p, and the second would then make the goal a multiple of minHeap.
func floorPercent(percent int, minHeap, live, stacks, globals uint64) int {
	base := live + stacks + globals
	if live+base*uint64(percent)/100 >= minHeap {
		return percent
	}
	limit := int(minHeap * 100 / heapMinimum)
	if base == 0 {
		return max(percent, limit)
	}
	return max(percent, min(int((minHeap-live)*100/base)+1, limit))
}
