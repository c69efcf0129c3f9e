package presence

import (
	"bytes"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// recorder collects the changes a Tracker publishes.
type recorder struct {
	mu      sync.Mutex
	changes []Change // guarded by mu
}

func (r *recorder) OnChange(c Change) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.changes = append(r.changes, c)
}

// take returns the changes recorded since the last take.
func (r *recorder) take() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.changes
	r.changes = nil
	return c
}

// pass runs one publish pass on the tracker's goroutine and waits until it
// and its OnChange calls are done.
func (t *Tracker) pass(tb testing.TB) {
	tb.Helper()
	ack := make(chan struct{})
	select {
	case t.syncReq <- ack:
	case <-t.done:
		tb.Fatal("tracker closed")
	}
	<-ack
}

// testTracker starts a tracker on a fake clock that records its changes and
// is closed when the test ends. It publishes only when the test calls pass.
func testTracker(t *testing.T, cfg Config) (*Tracker, *fakeClock, *recorder) {
	t.Helper()
	checkNoLeaks(t)
	clk := newFakeClock()
	rec := &recorder{}
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	cfg.OnChange = rec.OnChange
	tr := newTracker(cfg)
	tr.manual = true
	go tr.run()
	t.Cleanup(tr.Close)
	// The goroutine's first pass runs as soon as it is scheduled; wait for
	// it here, or it may publish in the middle of a test's first steps.
	tr.pass(t)
	return tr, clk, rec
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// checkNoLeaks fails the test if goroutines started during it are still
// running when it ends (after its other cleanups, which run first). Tests
// using it must not run in parallel.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	before := goroutineIDs()
	t.Cleanup(func() {
		var extra []string
		deadline := time.Now().Add(5 * time.Second)
		for {
			extra = extra[:0]
			for id, stack := range goroutineStacks() {
				if !slices.Contains(before, id) {
					extra = append(extra, stack)
				}
			}
			if len(extra) == 0 {
				return
			}
			if time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		t.Errorf("%d leaked goroutine(s):\n%s", len(extra), strings.Join(extra, "\n\n"))
	})
}

func goroutineIDs() []uint64 {
	var ids []uint64
	for id := range goroutineStacks() {
		ids = append(ids, id)
	}
	return ids
}

// goroutineStacks returns the stacks of all goroutines but the caller's, by id.
func goroutineStacks() map[uint64]string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	stacks := make(map[uint64]string)
	for i, g := range bytes.Split(buf, []byte("\n\n")) {
		if i == 0 {
			continue // the calling goroutine
		}
		rest, ok := bytes.CutPrefix(g, []byte("goroutine "))
		if !ok {
			continue
		}
		idb, _, _ := bytes.Cut(rest, []byte(" "))
		id, err := strconv.ParseUint(string(idb), 10, 64)
		if err != nil {
			continue
		}
		stacks[id] = string(g)
	}
	return stacks
}
