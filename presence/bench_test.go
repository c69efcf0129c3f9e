package presence

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

func BenchmarkTrackerConnectDisconnect(b *testing.B) {
	tr := New(Config{})
	defer tr.Close()
	b.ReportAllocs()
	var e uint64
	for b.Loop() {
		e++
		tr.Connect("ann", "phone", e)
		tr.Disconnect("ann", "phone", e)
	}
}

func BenchmarkTrackerConnectDisconnectParallel(b *testing.B) {
	tr := New(Config{})
	defer tr.Close()
	var id atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		user := fmt.Sprint("user", id.Add(1))
		var e uint64
		for pb.Next() {
			e++
			tr.Connect(user, "phone", e)
			tr.Disconnect(user, "phone", e)
		}
	})
}

// BenchmarkTrackerConnectDisconnectManyUsers cycles through 100k users, so
// the maps and queues work at size; Coalesce is short so passes run.
func BenchmarkTrackerConnectDisconnectManyUsers(b *testing.B) {
	tr := New(Config{Coalesce: 10 * time.Millisecond})
	defer tr.Close()
	users := make([]string, 100_000)
	for i := range users {
		users[i] = fmt.Sprint("user", i)
	}
	b.ReportAllocs()
	var e uint64
	for b.Loop() {
		e++
		u := users[e%uint64(len(users))]
		tr.Connect(u, "phone", e)
		tr.Disconnect(u, "phone", e)
	}
}

func BenchmarkWatchersNotify1000(b *testing.B) {
	ws := NewWatchers(0)
	for range 1000 {
		ws.Watch(&countWatcher{}, []string{"star"})
	}
	st := Status{User: "star", Online: true, Devices: []string{"phone"}}
	b.ReportAllocs()
	for b.Loop() {
		st.Epoch++
		if n := ws.Notify(st); n != 1000 {
			b.Fatalf("notified %d", n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/watcher")
}

func BenchmarkWatchersWatchUnwatchAll(b *testing.B) {
	ws := NewWatchers(0)
	users := make([]string, 100)
	for i := range users {
		users[i] = fmt.Sprint("user", i)
	}
	// Other watchers keep the users' entries alive.
	for range 10 {
		ws.Watch(&countWatcher{}, users)
	}
	w := &countWatcher{}
	b.ReportAllocs()
	for b.Loop() {
		ws.Watch(w, users)
		ws.UnwatchAll(w)
	}
}

func TestHotPathAllocs(t *testing.T) {
	checkNoLeaks(t)
	tr := New(Config{})
	defer tr.Close()
	var e uint64
	tr.Connect("ann", "phone", 0)
	if a := testing.AllocsPerRun(1000, func() {
		e++
		tr.Connect("ann", "phone", e)
		tr.Disconnect("ann", "phone", e)
	}); a != 0 {
		t.Errorf("Connect+Disconnect of a known device: %v allocs, want 0", a)
	}

	ws := NewWatchers(0)
	for range 100 {
		ws.Watch(&countWatcher{}, []string{"star"})
	}
	st := Status{User: "star", Online: true, Devices: []string{"phone"}}
	if a := testing.AllocsPerRun(1000, func() {
		st.Epoch++
		ws.Notify(st)
	}); a != 0 {
		t.Errorf("Notify: %v allocs, want 0", a)
	}
}
