package gateway

import (
	"testing"
	"unsafe"
)

// An idle connection's cost is counted in bytes (docs/benchmarks.md: ≤ 14 KiB
// per connection in all). The session struct is Parley's own share of it;
// this guard makes growth a deliberate decision.
func TestSessionSize(t *testing.T) {
	const max = 384
	if n := unsafe.Sizeof(session{}); n > max {
		t.Fatalf("session is %d bytes, budget %d", n, max)
	} else {
		t.Logf("session is %d bytes", n)
	}
}
