package presence

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

// testWatcher records what it is told.
type testWatcher struct {
	name string
	mu   sync.Mutex
	got  []Status // guarded by mu
}

func (w *testWatcher) PresenceChanged(st Status) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.got = append(w.got, st)
}

func (w *testWatcher) take() []Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	g := w.got
	w.got = nil
	return g
}

// countWatcher counts calls and nothing else.
type countWatcher struct{ n atomic.Int64 }

func (w *countWatcher) PresenceChanged(Status) { w.n.Add(1) }

// funcWatcher calls f.
type funcWatcher struct{ f func(Status) }

func (w *funcWatcher) PresenceChanged(st Status) { w.f(st) }

func TestWatchersWatchUnwatch(t *testing.T) {
	ws := NewWatchers(0)
	a, b := &testWatcher{name: "a"}, &testWatcher{name: "b"}

	if n, err := ws.Watch(a, []string{"ann", "bob", "ann"}); n != 2 || err != nil {
		t.Fatalf("Watch: got %d, %v; want 2, nil", n, err)
	}
	if n, err := ws.Watch(a, []string{"bob", "ann"}); n != 0 || err != nil {
		t.Fatalf("Watch again: got %d, %v; want 0, nil", n, err)
	}
	if n, _ := ws.Watch(b, []string{"ann"}); n != 1 {
		t.Fatalf("Watch b: got %d, want 1", n)
	}
	if got := [...]int{ws.Count("ann"), ws.Count("bob"), ws.Count("cat")}; got != [...]int{2, 1, 0} {
		t.Fatalf("counts ann, bob, cat: got %v", got)
	}

	if n := ws.Notify(Status{User: "ann", Online: true, Epoch: 1}); n != 2 {
		t.Fatalf("Notify ann: called %d, want 2", n)
	}
	if got := a.take(); len(got) != 1 || got[0].User != "ann" || !got[0].Online {
		t.Fatalf("a got %+v", got)
	}
	if got := b.take(); len(got) != 1 {
		t.Fatalf("b got %+v", got)
	}
	if n := ws.Notify(Status{User: "cat", Epoch: 1}); n != 0 {
		t.Fatalf("Notify of an unwatched user called %d", n)
	}

	if n := ws.Unwatch(a, []string{"ann", "cat", "ann"}); n != 1 {
		t.Fatalf("Unwatch: got %d, want 1", n)
	}
	if n := ws.Unwatch(a, []string{"ann"}); n != 0 {
		t.Fatalf("Unwatch again: got %d, want 0", n)
	}
	if got := [...]int{ws.Count("ann"), ws.Count("bob")}; got != [...]int{1, 1} {
		t.Fatalf("counts ann, bob: got %v", got)
	}
	ws.Notify(Status{User: "ann", Epoch: 2})
	if got := a.take(); len(got) != 0 {
		t.Fatalf("unwatched a got %+v", got)
	}
	if got := b.take(); len(got) != 1 || got[0].Epoch != 2 {
		t.Fatalf("b got %+v", got)
	}

	ws.Unwatch(a, []string{"bob"})
	ws.Unwatch(b, []string{"ann"})
	if n := ws.entriesForTest(); n != 0 {
		t.Fatalf("%d map entries after unwatching everything, want 0", n)
	}
}

func TestWatchersLimit(t *testing.T) {
	ws := NewWatchers(3)
	w := &testWatcher{}
	if _, err := ws.Watch(w, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	n, err := ws.Watch(w, []string{"a", "c", "d"})
	if !errors.Is(err, ErrWatchLimit) || n != 0 {
		t.Fatalf("over the limit: got %d, %v; want 0, ErrWatchLimit", n, err)
	}
	if ws.Count("c") != 0 || ws.Count("d") != 0 {
		t.Fatal("a failed Watch added users")
	}
	// Users already watched do not count against the limit again.
	if n, err := ws.Watch(w, []string{"a", "b", "c", "c"}); n != 1 || err != nil {
		t.Fatalf("up to the limit: got %d, %v; want 1, nil", n, err)
	}
	if _, err := ws.Watch(w, []string{"d"}); !errors.Is(err, ErrWatchLimit) {
		t.Fatalf("at the limit: got %v", err)
	}
	ws.Unwatch(w, []string{"a"})
	if n, err := ws.Watch(w, []string{"d"}); n != 1 || err != nil {
		t.Fatalf("after Unwatch: got %d, %v", n, err)
	}
	// The limit is per watcher.
	if n, err := ws.Watch(&testWatcher{}, []string{"a", "b", "c"}); n != 3 || err != nil {
		t.Fatalf("other watcher: got %d, %v", n, err)
	}
}

func TestWatchersStaleNotifyDropped(t *testing.T) {
	ws := NewWatchers(0)
	w := &testWatcher{}
	ws.Watch(w, []string{"ann"})

	for _, e := range []uint64{5, 3, 5, 0, 6, 4} {
		ws.Notify(Status{User: "ann", Epoch: e})
	}
	var epochs []uint64
	for _, st := range w.take() {
		epochs = append(epochs, st.Epoch)
	}
	if !slices.Equal(epochs, []uint64{5, 6}) {
		t.Fatalf("delivered epochs %v, want [5 6]", epochs)
	}
}

func TestWatchersNotifyOrderUnderConcurrency(t *testing.T) {
	ws := NewWatchers(0)
	var (
		mu   sync.Mutex
		last uint64
		bad  []string
	)
	w := &funcWatcher{f: func(st Status) {
		mu.Lock()
		defer mu.Unlock()
		if st.Epoch <= last {
			bad = append(bad, fmt.Sprintf("%d after %d", st.Epoch, last))
		}
		last = st.Epoch
	}}
	ws.Watch(w, []string{"ann"})
	for i := range 16 {
		ws.Watch(&countWatcher{}, []string{"ann", fmt.Sprint("u", i)})
	}
	var wg sync.WaitGroup
	var next atomic.Uint64
	for range 8 {
		wg.Go(func() {
			for range 500 {
				ws.Notify(Status{User: "ann", Epoch: next.Add(1)})
			}
		})
	}
	wg.Wait()
	if len(bad) > 0 {
		t.Fatalf("stale statuses delivered: %v", bad[:min(len(bad), 5)])
	}
}

func TestWatchersUnwatchAll(t *testing.T) {
	ws := NewWatchers(0)
	a, b := &testWatcher{}, &testWatcher{}
	users := make([]string, 100)
	for i := range users {
		users[i] = fmt.Sprint("user", i)
	}
	ws.Watch(a, users)
	ws.Watch(b, users[:10])
	if n := ws.UnwatchAll(a); n != 100 {
		t.Fatalf("UnwatchAll: got %d, want 100", n)
	}
	if n := ws.UnwatchAll(a); n != 0 {
		t.Fatalf("UnwatchAll again: got %d, want 0", n)
	}
	for i, u := range users {
		want := 0
		if i < 10 {
			want = 1
		}
		if got := ws.Count(u); got != want {
			t.Fatalf("Count(%s) = %d, want %d", u, got, want)
		}
	}
	ws.UnwatchAll(b)
	if n := ws.entriesForTest(); n != 0 {
		t.Fatalf("%d map entries after UnwatchAll, want 0", n)
	}
	// A watcher can start over.
	if n, err := ws.Watch(a, users); n != 100 || err != nil {
		t.Fatalf("Watch after UnwatchAll: got %d, %v", n, err)
	}
}

func TestWatchersManyWatchers(t *testing.T) {
	const n = 10_000
	ws := NewWatchers(0)
	w := make([]*countWatcher, n)
	for i := range w {
		w[i] = &countWatcher{}
		if _, err := ws.Watch(w[i], []string{"star"}); err != nil {
			t.Fatal(err)
		}
	}
	if got := ws.Notify(Status{User: "star", Online: true, Epoch: 1}); got != n {
		t.Fatalf("Notify called %d, want %d", got, n)
	}
	for i := range w {
		if got := w[i].n.Load(); got != 1 {
			t.Fatalf("watcher %d called %d times, want 1", i, got)
		}
	}

	// Remove every other watcher (the list was shared with the Notify,
	// so the first removal copies it) and notify again.
	for i := 0; i < n; i += 2 {
		ws.UnwatchAll(w[i])
	}
	if got := ws.Count("star"); got != n/2 {
		t.Fatalf("Count = %d, want %d", got, n/2)
	}
	if got := ws.Notify(Status{User: "star", Epoch: 2}); got != n/2 {
		t.Fatalf("Notify called %d, want %d", got, n/2)
	}
	for i := range w {
		want := int64(1 + i%2)
		if got := w[i].n.Load(); got != want {
			t.Fatalf("watcher %d called %d times, want %d", i, got, want)
		}
	}
	ws.checkIndexForTest(t, "star")
}

func TestWatchersWatchFromCallback(t *testing.T) {
	// A watcher may change watches, its own included, while being notified;
	// the Notify in progress is not affected.
	ws := NewWatchers(0)
	others := make([]*countWatcher, 100)
	for i := range others {
		others[i] = &countWatcher{}
		ws.Watch(others[i], []string{"ann"})
	}
	var self *funcWatcher
	self = &funcWatcher{f: func(Status) {
		ws.Unwatch(self, []string{"ann"})
		ws.Watch(self, []string{"bob"})
		for _, o := range others {
			ws.UnwatchAll(o)
		}
	}}
	ws.Watch(self, []string{"ann"})
	if n := ws.Notify(Status{User: "ann", Epoch: 1}); n != 101 {
		t.Fatalf("Notify called %d, want 101", n)
	}
	for i, o := range others {
		if o.n.Load() != 1 {
			t.Fatalf("watcher %d not called", i)
		}
	}
	if ws.Count("ann") != 0 || ws.Count("bob") != 1 {
		t.Fatalf("counts ann, bob: %d, %d", ws.Count("ann"), ws.Count("bob"))
	}
}

func TestWatchersConcurrent(t *testing.T) {
	ws := NewWatchers(50)
	users := make([]string, 40)
	for i := range users {
		users[i] = fmt.Sprint("user", i)
	}
	var wg sync.WaitGroup
	var epoch atomic.Uint64
	stop := make(chan struct{})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, u := range users {
					ws.Notify(Status{User: u, Epoch: epoch.Add(1)})
				}
			}
		})
	}
	var churn sync.WaitGroup
	for g := range 8 {
		churn.Go(func() {
			w := &countWatcher{}
			for r := range 200 {
				lo := (g + r) % len(users)
				hi := min(lo+1+r%7, len(users))
				if _, err := ws.Watch(w, users[lo:hi]); err != nil {
					t.Error(err)
					return
				}
				if r%3 == 0 {
					ws.Unwatch(w, users[lo:hi])
				}
				if r%50 == 49 {
					ws.UnwatchAll(w)
				}
			}
			ws.UnwatchAll(w)
		})
	}
	churn.Wait()
	close(stop)
	wg.Wait()
	if n := ws.entriesForTest(); n != 0 {
		t.Fatalf("%d map entries left, want 0", n)
	}
}

// entriesForTest returns the number of map entries of ws.
func (ws *Watchers) entriesForTest() int {
	n := 0
	for i := range numShards {
		ws.users[i].mu.Lock()
		n += len(ws.users[i].m)
		ws.users[i].mu.Unlock()
		ws.watchers[i].mu.Lock()
		n += len(ws.watchers[i].m)
		ws.watchers[i].mu.Unlock()
	}
	return n
}

// checkIndexForTest checks that user's index matches its list.
func (ws *Watchers) checkIndexForTest(t *testing.T, user string) {
	t.Helper()
	sh := ws.userShard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[user]
	if e.idx == nil || len(e.idx) != len(e.list) {
		t.Fatalf("index has %d entries, list %d", len(e.idx), len(e.list))
	}
	for i, w := range e.list {
		if e.idx[w] != i {
			t.Fatalf("index of list[%d] is %d", i, e.idx[w])
		}
	}
}
