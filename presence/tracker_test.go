package presence

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

func TestTrackerMultiDevice(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{})

	if st := tr.Status("ann"); st.Online || st.Epoch != 0 || !st.LastSeen.IsZero() || st.User != "ann" {
		t.Fatalf("unknown user: got %+v", st)
	}
	tr.Connect("ann", "phone", 1)
	tr.Connect("ann", "laptop", 1)
	st := tr.Status("ann")
	if !st.Online || !slices.Equal(st.Devices, []string{"laptop", "phone"}) || !st.LastSeen.IsZero() {
		t.Fatalf("two devices online: got %+v", st)
	}

	clk.Advance(time.Second)
	tr.Disconnect("ann", "phone", 1)
	if st := tr.Status("ann"); !st.Online || !slices.Equal(st.Devices, []string{"laptop"}) || !st.LastSeen.IsZero() {
		t.Fatalf("laptop still online: got %+v", st)
	}

	clk.Advance(time.Second)
	off := clk.Now()
	tr.Disconnect("ann", "laptop", 1)
	st = tr.Status("ann")
	if st.Online || st.Devices != nil || !st.LastSeen.Equal(off) {
		t.Fatalf("all devices offline: got %+v, want LastSeen %v", st, off)
	}

	// Coming back keeps LastSeen: it is when the user last went offline.
	tr.Connect("ann", "phone", 2)
	if st := tr.Status("ann"); !st.Online || !st.LastSeen.Equal(off) {
		t.Fatalf("back online: got %+v", st)
	}

	// Disconnect of unknown users and devices is a no-op.
	tr.Disconnect("bob", "phone", 1)
	tr.Disconnect("ann", "watch", 1)
	if st := tr.Status("bob"); st.Online || st.Epoch != 0 {
		t.Fatalf("unknown user after disconnect: got %+v", st)
	}
	clk.Advance(time.Second)
	tr.pass(t)
	if got := rec.take(); len(got) != 1 || !slices.Equal(got[0].Devices, []string{"phone"}) {
		t.Fatalf("changes: got %+v, want one with [phone]", got)
	}
}

func TestTrackerStaleEpochs(t *testing.T) {
	tr, _, _ := testTracker(t, Config{})

	// The phone reconnects (session 2) before the server noticed that
	// session 1 died; session 1's late disconnect must not take it offline.
	tr.Connect("ann", "phone", 1)
	tr.Connect("ann", "phone", 2)
	e := tr.Status("ann").Epoch
	tr.Disconnect("ann", "phone", 1)
	if st := tr.Status("ann"); !st.Online || st.Epoch != e {
		t.Fatalf("stale disconnect applied: got %+v", st)
	}

	// A connect of an older session is stale too.
	tr.Disconnect("ann", "phone", 2)
	if st := tr.Status("ann"); st.Online {
		t.Fatalf("disconnect of current session ignored: got %+v", st)
	}
	tr.Connect("ann", "phone", 1)
	tr.Connect("ann", "phone", 2) // the session that just ended
	if st := tr.Status("ann"); st.Online {
		t.Fatalf("stale connect applied: got %+v", st)
	}
	tr.Connect("ann", "phone", 3)
	if st := tr.Status("ann"); !st.Online {
		t.Fatalf("new session ignored: got %+v", st)
	}

	// A disconnect newer than the current session ends it as well.
	tr.Disconnect("ann", "phone", 4)
	if st := tr.Status("ann"); st.Online {
		t.Fatalf("newer disconnect ignored: got %+v", st)
	}
	tr.Connect("ann", "phone", 4)
	if st := tr.Status("ann"); st.Online {
		t.Fatalf("connect of an ended session applied: got %+v", st)
	}

	// Epochs are per device.
	tr.Connect("ann", "laptop", 1)
	if st := tr.Status("ann"); !st.Online || !slices.Equal(st.Devices, []string{"laptop"}) {
		t.Fatalf("other device: got %+v", st)
	}
}

func TestTrackerPublishesAfterWindow(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{})

	tr.Connect("ann", "phone", 1)
	tr.pass(t)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("published before the window: %+v", got)
	}
	clk.Advance(DefaultCoalesce)
	tr.pass(t)
	got := rec.take()
	if len(got) != 1 || !got[0].Online || !slices.Equal(got[0].Devices, []string{"phone"}) || got[0].User != "ann" {
		t.Fatalf("online change: got %+v", got)
	}
	online := got[0]
	if online.Status.Epoch != tr.Status("ann").Epoch {
		t.Fatalf("change epoch %d, status epoch %d", online.Epoch, tr.Status("ann").Epoch)
	}

	clk.Advance(time.Minute)
	off := clk.Now()
	tr.Disconnect("ann", "phone", 1)
	clk.Advance(DefaultCoalesce - time.Nanosecond)
	tr.pass(t)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("published before the window: %+v", got)
	}
	clk.Advance(time.Nanosecond)
	tr.pass(t)
	got = rec.take()
	if len(got) != 1 {
		t.Fatalf("offline: got %d changes, want 1: %+v", len(got), got)
	}
	if c := got[0]; c.Online || c.Devices != nil || !c.LastSeen.Equal(off) || c.Epoch <= online.Epoch {
		t.Fatalf("offline change: got %+v, want LastSeen %v and epoch > %d", c, off, online.Epoch)
	}

	// Nothing more to publish.
	clk.Advance(time.Hour)
	tr.pass(t)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("published twice: %+v", got)
	}
}

func TestTrackerFlappingPublishesNothing(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{Coalesce: 10 * time.Second})

	// A user who was never published online flaps: nothing at all.
	tr.Connect("bob", "phone", 1)
	tr.Disconnect("bob", "phone", 1)
	tr.Connect("bob", "phone", 2)
	tr.Disconnect("bob", "phone", 2)

	tr.Connect("ann", "phone", 1)
	clk.Advance(10 * time.Second)
	tr.pass(t)
	if got := rec.take(); len(got) != 1 || got[0].User != "ann" {
		t.Fatalf("got %+v, want ann online", got)
	}

	// A published online user flaps many times within one window.
	e := tr.Status("ann").Epoch
	for i := uint64(2); i < 50; i++ {
		tr.Disconnect("ann", "phone", i-1)
		clk.Advance(100 * time.Millisecond)
		tr.Connect("ann", "phone", i)
	}
	if e2 := tr.Status("ann").Epoch; e2 <= e {
		t.Fatalf("epoch did not grow over coalesced transitions: %d -> %d", e, e2)
	}
	clk.Advance(10 * time.Second)
	tr.pass(t)
	clk.Advance(10 * time.Second)
	tr.pass(t)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("flapping published %d changes: %+v", len(got), got)
	}
	if st := tr.Status("bob"); st.Online || st.LastSeen.IsZero() {
		t.Fatalf("bob: got %+v", st)
	}
}

// TestTrackerPublished checks that Published lags Status by the coalescing
// window, so that a watcher starting from it and applying the published
// changes ends at the true state even across a coalesced flap.
func TestTrackerPublished(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{Coalesce: 10 * time.Second})
	if st := tr.Published("ann"); st.Online || st.User != "ann" {
		t.Fatalf("unknown user: %+v", st)
	}
	tr.Connect("ann", "phone", 1)
	if st, pub := tr.Status("ann"), tr.Published("ann"); !st.Online || pub.Online {
		t.Fatalf("inside the window: status %+v published %+v", st, pub)
	}
	clk.Advance(10 * time.Second)
	tr.pass(t)
	rec.take()
	if pub := tr.Published("ann"); !pub.Online || len(pub.Devices) != 1 || pub.Devices[0] != "phone" {
		t.Fatalf("after the window: %+v", pub)
	}
	// A flap: live offline, published still online, and after the window
	// (nothing published) still online, which is the truth.
	tr.Disconnect("ann", "phone", 1)
	if st, pub := tr.Status("ann"), tr.Published("ann"); st.Online || !pub.Online {
		t.Fatalf("mid-flap: status %+v published %+v", st, pub)
	}
	tr.Connect("ann", "phone", 2)
	clk.Advance(10 * time.Second)
	tr.pass(t)
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("flap published %+v", got)
	}
	if pub := tr.Published("ann"); !pub.Online {
		t.Fatalf("after the flap: %+v", pub)
	}
	// Offline for real: published offline with a last-seen time.
	tr.Disconnect("ann", "phone", 2)
	clk.Advance(10 * time.Second)
	tr.pass(t)
	if pub := tr.Published("ann"); pub.Online || pub.LastSeen.IsZero() || len(pub.Devices) != 0 {
		t.Fatalf("offline: %+v", pub)
	}
}

func TestTrackerWindowStartsAtFirstTransition(t *testing.T) {
	// Transitions do not push the deadline back: a user whose devices keep
	// changing is still published once per window.
	tr, clk, rec := testTracker(t, Config{})
	tr.Connect("ann", "phone", 1)
	clk.Advance(DefaultCoalesce / 2)
	tr.Connect("ann", "laptop", 1)
	clk.Advance(DefaultCoalesce / 2)
	tr.pass(t)
	got := rec.take()
	if len(got) != 1 || !slices.Equal(got[0].Devices, []string{"laptop", "phone"}) {
		t.Fatalf("got %+v, want one change with both devices", got)
	}

	// A device-set change of an online user is a change.
	tr.Disconnect("ann", "laptop", 1)
	clk.Advance(DefaultCoalesce)
	tr.pass(t)
	got = rec.take()
	if len(got) != 1 || !got[0].Online || !slices.Equal(got[0].Devices, []string{"phone"}) {
		t.Fatalf("got %+v, want one change with [phone]", got)
	}
}

func TestTrackerEpochGrows(t *testing.T) {
	clk := newFakeClock()
	tr, _, rec := testTracker(t, Config{Now: clk.Now, Coalesce: -1})

	var last uint64
	check := func(what string) {
		t.Helper()
		e := tr.Status("ann").Epoch
		if e <= last {
			t.Fatalf("%s: epoch %d, previous %d", what, e, last)
		}
		last = e
	}
	tr.Connect("ann", "phone", 1)
	check("connect")
	if want := uint64(clk.Now().UnixNano()); last != want {
		t.Fatalf("first epoch %d, want the clock in ns %d", last, want)
	}
	tr.Connect("ann", "laptop", 1) // same instant
	check("second device, clock unchanged")
	clk.Advance(-time.Hour) // the clock steps back
	tr.Disconnect("ann", "laptop", 1)
	check("clock stepped back")
	clk.Advance(2 * time.Hour)
	tr.Disconnect("ann", "phone", 1)
	check("clock forward")
	tr.Connect("ann", "phone", 2)
	check("reconnect")
	if want := uint64(clk.Now().UnixNano()) + 1; last != want {
		t.Fatalf("epoch %d, want the clock in ns + 1 = %d", last, want)
	}

	tr.pass(t)
	got := rec.take()
	if len(got) != 1 || got[0].Epoch != last {
		t.Fatalf("got %+v, want one change with epoch %d", got, last)
	}
}

func TestTrackerPublishImmediately(t *testing.T) {
	tr, _, rec := testTracker(t, Config{Coalesce: -1})
	tr.Connect("ann", "phone", 1)
	tr.pass(t) // no clock movement needed
	if got := rec.take(); len(got) != 1 || !got[0].Online {
		t.Fatalf("got %+v, want ann online", got)
	}
}

func TestTrackerBatch(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{})
	const n = 1000
	for i := range n {
		tr.Connect(fmt.Sprint("user", i), "phone", 1)
	}
	clk.Advance(DefaultCoalesce)
	tr.pass(t)
	got := rec.take()
	if len(got) != n {
		t.Fatalf("got %d changes, want %d", len(got), n)
	}
	seen := make(map[string]bool)
	for _, c := range got {
		if seen[c.User] || !c.Online {
			t.Fatalf("bad change %+v", c)
		}
		seen[c.User] = true
	}
}

func TestTrackerBatchLargerThanChunk(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{Retain: -1})
	// Users of one shard, more than a pass handles under one lock.
	var users []string
	for i := 0; len(users) < 2*passChunk+10; i++ {
		u := fmt.Sprint("user", i)
		if tr.shard(u) == &tr.shards[0] {
			users = append(users, u)
		}
	}
	for _, u := range users {
		tr.Connect(u, "phone", 1)
	}
	clk.Advance(DefaultCoalesce)
	tr.pass(t)
	if got := rec.take(); len(got) != len(users) {
		t.Fatalf("online: got %d changes, want %d", len(got), len(users))
	}
	for _, u := range users {
		tr.Disconnect(u, "phone", 1)
	}
	clk.Advance(DefaultCoalesce)
	tr.pass(t)
	if got := rec.take(); len(got) != len(users) {
		t.Fatalf("offline: got %d changes, want %d", len(got), len(users))
	}
	// Retain < 0: forgotten in the same pass.
	if n := tr.usersForTest(); n != 0 {
		t.Fatalf("%d users left, want 0", n)
	}
}

func TestTrackerRealClock(t *testing.T) {
	checkNoLeaks(t)
	rec := &recorder{}
	tr := New(Config{Coalesce: 20 * time.Millisecond, OnChange: rec.OnChange})
	defer tr.Close()

	var got []Change
	tr.Connect("ann", "phone", 1)
	waitFor(t, "online change", func() bool { got = append(got, rec.take()...); return len(got) > 0 })
	tr.Connect("bob", "phone", 1)
	tr.Disconnect("ann", "phone", 1)
	waitFor(t, "two changes", func() bool { got = append(got, rec.take()...); return len(got) >= 3 })
	byUser := make(map[string][]bool)
	for _, c := range got {
		byUser[c.User] = append(byUser[c.User], c.Online)
	}
	if !slices.Equal(byUser["ann"], []bool{true, false}) || !slices.Equal(byUser["bob"], []bool{true}) {
		t.Fatalf("got %+v", got)
	}
}

func TestTrackerRetain(t *testing.T) {
	tr, clk, rec := testTracker(t, Config{Retain: time.Minute})
	tr.Connect("ann", "phone", 5)
	tr.Connect("ann", "laptop", 1)
	clk.Advance(time.Second)
	tr.pass(t)
	e := tr.Status("ann").Epoch

	// An offline device of an online user is pruned after Retain.
	tr.Disconnect("ann", "laptop", 1)
	clk.Advance(time.Second)
	tr.pass(t)
	clk.Advance(2 * time.Minute)
	tr.Connect("ann", "tablet", 1) // schedules a pass for ann
	clk.Advance(time.Second)
	tr.pass(t)
	if tr.hasDeviceForTest("ann", "laptop") {
		t.Fatal("offline laptop not pruned")
	}

	// An offline user is remembered for Retain after going offline.
	tr.Disconnect("ann", "phone", 5)
	tr.Disconnect("ann", "tablet", 1)
	off := clk.Now()
	clk.Advance(time.Second)
	tr.pass(t)
	if st := tr.Status("ann"); !st.LastSeen.Equal(off) {
		t.Fatalf("got %+v, want LastSeen %v", st, off)
	}
	tr.Connect("ann", "phone", 4) // stale while remembered
	if st := tr.Status("ann"); st.Online {
		t.Fatalf("stale connect applied: %+v", st)
	}
	clk.Advance(time.Minute - time.Second - time.Nanosecond)
	tr.pass(t)
	if st := tr.Status("ann"); st.LastSeen.IsZero() {
		t.Fatal("forgotten before Retain")
	}
	clk.Advance(time.Nanosecond)
	tr.pass(t)
	if st := tr.Status("ann"); st.Epoch != 0 || !st.LastSeen.IsZero() {
		t.Fatalf("not forgotten after Retain: %+v", st)
	}
	// The epoch keeps growing after the user was forgotten.
	tr.Connect("ann", "phone", 6)
	if st := tr.Status("ann"); st.Epoch <= e {
		t.Fatalf("epoch after forgetting %d, before %d", st.Epoch, e)
	}
	rec.take()
	if n := tr.usersForTest(); n != 1 {
		t.Fatalf("%d users in the maps, want 1", n)
	}
}

func TestTrackerRetainRestartsWhenOfflineAgain(t *testing.T) {
	tr, clk, _ := testTracker(t, Config{Retain: time.Minute})
	tr.Connect("ann", "phone", 1)
	tr.Disconnect("ann", "phone", 1)
	clk.Advance(time.Second)
	tr.pass(t) // queued for expiry at +1m
	clk.Advance(50 * time.Second)
	tr.Connect("ann", "phone", 2)
	tr.Disconnect("ann", "phone", 2)
	off := clk.Now()
	clk.Advance(10 * time.Second) // the first expiry is due, ann was seen since
	tr.pass(t)
	if st := tr.Status("ann"); !st.LastSeen.Equal(off) {
		t.Fatalf("forgotten too early: %+v", st)
	}
	clk.Advance(time.Minute)
	tr.pass(t)
	if n := tr.usersForTest(); n != 0 {
		t.Fatalf("%d users in the maps, want 0", n)
	}
}

func TestTrackerOnChangeMayCallTracker(t *testing.T) {
	checkNoLeaks(t)
	clk := newFakeClock()
	var tr *Tracker
	var mu sync.Mutex
	var got []Status
	tr = New(Config{Now: clk.Now, Coalesce: -1, OnChange: func(c Change) {
		st := tr.Status(c.User) // would deadlock if a shard lock were held
		tr.Connect("other", "phone", 1)
		mu.Lock()
		got = append(got, st)
		mu.Unlock()
	}})
	defer tr.Close()
	tr.Connect("ann", "phone", 1)
	tr.pass(t)
	tr.pass(t)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("got %d callbacks, want 2 (ann, other)", len(got))
	}
}

func TestTrackerConcurrent(t *testing.T) {
	// Not manual: passes run on wake-ups while the sessions churn.
	checkNoLeaks(t)
	clk := newFakeClock()
	rec := &recorder{}
	tr := New(Config{Now: clk.Now, Coalesce: -1, OnChange: rec.OnChange})
	defer tr.Close()
	const (
		goroutines = 8
		users      = 50
		rounds     = 200
	)
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			dev := fmt.Sprint("dev", g)
			for r := range rounds {
				u := fmt.Sprint("user", r%users)
				e := uint64(r + 1)
				tr.Connect(u, dev, e)
				_ = tr.Status(u)
				if r%3 != 0 {
					tr.Disconnect(u, dev, e)
				}
			}
		})
	}
	wg.Wait()
	clk.Advance(time.Second)
	tr.pass(t)

	// Replay the changes: the last one per user must match Status, and
	// epochs must grow per user.
	last := make(map[string]Change)
	for _, c := range rec.take() {
		if p, ok := last[c.User]; ok && c.Epoch <= p.Epoch {
			t.Fatalf("epoch went back for %s: %d after %d", c.User, c.Epoch, p.Epoch)
		}
		last[c.User] = c
	}
	for i := range users {
		u := fmt.Sprint("user", i)
		st := tr.Status(u)
		c := last[u]
		if st.Online != c.Online || !slices.Equal(st.Devices, c.Devices) {
			t.Fatalf("%s: status %+v, last change %+v", u, st, c)
		}
	}
}

func TestTrackerClose(t *testing.T) {
	checkNoLeaks(t)
	rec := &recorder{}
	clk := newFakeClock()
	tr := New(Config{Now: clk.Now, OnChange: rec.OnChange})
	tr.Connect("ann", "phone", 1)
	tr.Close()
	tr.Close() // idempotent
	clk.Advance(time.Hour)
	tr.Connect("bob", "phone", 1) // still safe after Close
	if st := tr.Status("bob"); !st.Online {
		t.Fatalf("status after Close: %+v", st)
	}
	if got := rec.take(); len(got) != 0 {
		t.Fatalf("changes after Close: %+v", got)
	}
}

func (t *Tracker) hasDeviceForTest(user, device string) bool {
	sh := t.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	if u == nil {
		return false
	}
	_, ok := u.find(device)
	return ok
}

func (t *Tracker) usersForTest() int {
	n := 0
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += len(sh.users)
		sh.mu.Unlock()
	}
	return n
}
