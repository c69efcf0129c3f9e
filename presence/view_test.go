package presence

import (
	"slices"
	"testing"
	"time"
)

func online(user string, devices ...string) Status {
	return Status{User: user, Online: true, Devices: devices}
}

func offline(user string, at time.Time) Status {
	return Status{User: user, LastSeen: at}
}

func TestViewMergesNodes(t *testing.T) {
	clk := newFakeClock()
	v := NewView(clk.Now)
	st, ok := v.Apply(1, 1, online("ann", "phone"))
	if !ok || !st.Online || !slices.Equal(st.Devices, []string{"phone"}) || st.Epoch == 0 {
		t.Fatalf("first device: %+v %v", st, ok)
	}
	e1 := st.Epoch
	st, ok = v.Apply(2, 1, online("ann", "laptop"))
	if !ok || !slices.Equal(st.Devices, []string{"laptop", "phone"}) || st.Epoch <= e1 {
		t.Fatalf("second node: %+v %v", st, ok)
	}
	// The same device on two nodes (a reconnect racing the old session's
	// end) is listed once.
	if st, ok = v.Apply(2, 2, online("ann", "laptop", "phone")); ok {
		t.Fatalf("a device already listed changed the merged state: %+v", st)
	}
	at := clk.Now()
	st, ok = v.Apply(1, 2, offline("ann", at))
	if ok || !st.Online {
		t.Fatalf("node 1 going offline while node 2 holds both devices: %+v %v", st, ok)
	}
	st, ok = v.Apply(2, 3, offline("ann", at.Add(time.Second)))
	if !ok || st.Online || !st.LastSeen.Equal(at.Add(time.Second)) {
		t.Fatalf("last node offline: %+v %v", st, ok)
	}
	if got := v.Status("ann"); got.Online || got.Epoch != st.Epoch {
		t.Fatalf("Status = %+v, want %+v", got, st)
	}
}

// TestViewStaleChange: a node's older change never overwrites its newer
// one, and a dead node's late offline never takes a user offline who is
// online through another node.
func TestViewStaleChange(t *testing.T) {
	clk := newFakeClock()
	v := NewView(clk.Now)
	v.Apply(1, 5, online("bob", "phone"))
	if _, ok := v.Apply(1, 4, offline("bob", clk.Now())); ok {
		t.Fatal("an older change of the same node applied")
	}
	if !v.Status("bob").Online {
		t.Fatal("bob offline after a stale change")
	}
	// bob reconnects to node 2; node 1's late offline arrives after.
	v.Apply(2, 1, online("bob", "phone"))
	if st, ok := v.Apply(1, 6, offline("bob", clk.Now())); ok || !st.Online {
		t.Fatalf("node 1's offline took bob offline though node 2 holds him: %+v", st)
	}
}

func TestViewNodeDown(t *testing.T) {
	clk := newFakeClock()
	v := NewView(clk.Now)
	v.Apply(1, 1, online("a", "d1"))
	v.Apply(1, 2, online("b", "d1"))
	v.Apply(2, 1, online("b", "d2"))
	heard := clk.Now().Add(-3 * time.Second)
	changed := v.NodeDown(1, heard)
	if len(changed) != 2 {
		t.Fatalf("NodeDown changed %d users, want 2: %+v", len(changed), changed)
	}
	a, b := v.Status("a"), v.Status("b")
	if a.Online || !a.LastSeen.Equal(heard) {
		t.Fatalf("a after its node died: %+v", a)
	}
	if !b.Online || !slices.Equal(b.Devices, []string{"d2"}) {
		t.Fatalf("b after node 1 died: %+v", b)
	}
	if again := v.NodeDown(1, heard); len(again) != 0 {
		t.Fatalf("second NodeDown changed %+v", again)
	}
}

func TestViewReplace(t *testing.T) {
	clk := newFakeClock()
	v := NewView(clk.Now)
	v.Apply(1, 3, online("stale", "d"))  // the snapshot says it is gone
	v.Apply(1, 12, online("newer", "d")) // set after the snapshot: kept
	v.Apply(2, 1, online("other", "d"))  // another node: untouched
	changed := v.Replace(1, 10, []Status{online("fresh", "d"), online("newer", "x")})
	names := map[string]bool{}
	for _, st := range changed {
		names[st.User] = st.Online
	}
	if len(names) != 2 || names["stale"] || !names["fresh"] {
		t.Fatalf("Replace changed %+v, want stale offline and fresh online", changed)
	}
	if st := v.Status("newer"); !slices.Equal(st.Devices, []string{"d"}) {
		t.Fatalf("a change newer than the snapshot was overwritten: %+v", st)
	}
	if !v.Status("other").Online {
		t.Fatal("Replace of node 1 touched node 2's entry")
	}
}

func TestViewForget(t *testing.T) {
	clk := newFakeClock()
	v := NewView(clk.Now)
	v.Apply(1, 1, online("u", "d"))
	v.Apply(1, 2, offline("u", clk.Now()))
	v.Apply(1, 3, online("w", "d"))
	if v.Users() != 2 {
		t.Fatalf("Users = %d, want 2", v.Users())
	}
	v.Forget(clk.Now().Add(time.Second))
	if v.Users() != 1 || !v.Status("w").Online {
		t.Fatalf("Forget dropped an online user or kept an old offline one: %d", v.Users())
	}
	if st := v.Status("u"); !st.LastSeen.IsZero() {
		t.Fatalf("forgotten user still has last-seen %v", st.LastSeen)
	}
}
