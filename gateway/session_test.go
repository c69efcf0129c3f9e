package gateway

import (
	"fmt"
	"testing"
)

func keysOf(e *ephSet) string {
	var out []string
	for _, f := range e.appendTo(nil) {
		out = append(out, string(f))
	}
	return fmt.Sprint(out)
}

// ephSet keeps the newest frame per key, in the arrival order of the keys,
// and evicts the oldest key beyond its bound.
func TestEphSet(t *testing.T) {
	var e ephSet
	if e.len() != 0 || keysOf(&e) != "[]" {
		t.Fatal("zero value not empty")
	}
	put := func(k, v string, wantReplaced, wantEvicted bool) {
		t.Helper()
		r, ev := e.put(k, []byte(v), 3)
		if r != wantReplaced || ev != wantEvicted {
			t.Fatalf("put(%s,%s) = %v,%v", k, v, r, ev)
		}
	}
	put("a", "a1", false, false)
	put("a", "a2", true, false) // newest wins, inline slot
	if keysOf(&e) != "[a2]" || e.more != nil {
		t.Fatalf("one key: %s (map allocated: %v)", keysOf(&e), e.more != nil)
	}
	put("b", "b1", false, false)
	put("c", "c1", false, false)
	put("b", "b2", true, false) // keeps its place
	if got := keysOf(&e); got != "[a2 b2 c1]" {
		t.Fatalf("order: %s", got)
	}
	put("d", "d1", false, true) // evicts a, the oldest
	if got := keysOf(&e); got != "[b2 c1 d1]" || e.len() != 3 {
		t.Fatalf("after eviction: %s", got)
	}
	put("e", "e1", false, true) // evicts b
	if got := keysOf(&e); got != "[c1 d1 e1]" {
		t.Fatalf("after second eviction: %s", got)
	}
}

// Offering one value to an idle session's set allocates nothing.
func TestEphSetInlineAllocs(t *testing.T) {
	frame := []byte(`{"type":"event"}`)
	n := testing.AllocsPerRun(100, func() {
		var e ephSet
		e.put("e:t", frame, 256)
		e.put("e:t", frame, 256)
		_ = e.len()
	})
	if n != 0 {
		t.Fatalf("%v allocations", n)
	}
}
