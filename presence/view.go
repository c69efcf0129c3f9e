package presence

import (
	"hash/maphash"
	"slices"
	"sync"
	"time"
)

// View is the cluster-wide presence: the Status each node last published
// for each user, merged into one Status per user. The hub feeds it the
// nodes' published changes (Apply), whole-node snapshots (Replace) and node
// deaths (NodeDown); it returns the merged Status whenever that changes, for
// the Watchers.
//
// Ordering. Each node numbers the changes it publishes (a per-node sequence
// that only grows while the node's process lives; a restarted node is a new
// node id). An entry is replaced only by a change with a higher sequence, so
// a late or replayed change of a node never overwrites a newer one of the
// same node. Entries of different nodes never overwrite each other: a user
// who reconnects to another node is online through that node's entry
// whatever the old node still says, and the old node's entry goes when it
// says so or when it is declared dead.
//
// The merged Status has its own Epoch, which grows with every change of the
// merged state, so Watchers can drop stale ones.
type View struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [numShards]viewShard
}

type viewShard struct {
	mu    sync.Mutex
	users map[string]*viewUser // guarded by mu
	_     [64]byte
}

// viewUser is one user's entries. Guarded by its shard's mu.
type viewUser struct {
	entries  []nodeEntry // one per node that reported the user online
	lastSeen time.Time   // newest LastSeen any node reported
	epoch    uint64      // merged-state epoch
	devices  []string    // merged devices as last returned, sorted; online iff non-empty
}

// nodeEntry is one node's published state of one user.
type nodeEntry struct {
	node    uint64
	seq     uint64   // the node's change sequence this entry came from
	devices []string // sorted, non-empty
}

// NewView returns an empty View. now nil means time.Now.
func NewView(now func() time.Time) *View {
	if now == nil {
		now = time.Now
	}
	v := &View{now: now, seed: maphash.MakeSeed()}
	for i := range v.shards {
		v.shards[i].users = make(map[string]*viewUser)
	}
	return v
}

func (v *View) shard(user string) *viewShard {
	return &v.shards[maphash.String(v.seed, user)&(numShards-1)]
}

// Apply records node's change number seq, st (the node's published Status
// of st.User), and returns the merged Status and whether it changed. A
// change not newer than what the view holds from node for the user is
// ignored.
func (v *View) Apply(node, seq uint64, st Status) (Status, bool) {
	sh := v.shard(st.User)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[st.User]
	if u == nil {
		if !st.Online && st.LastSeen.IsZero() {
			return Status{User: st.User}, false // nothing to take offline or remember
		}
		u = &viewUser{}
		sh.users[st.User] = u
	}
	i := u.find(node)
	if i >= 0 && u.entries[i].seq >= seq {
		return u.statusLocked(st.User), false
	}
	if st.LastSeen.After(u.lastSeen) {
		u.lastSeen = st.LastSeen
	}
	switch {
	case st.Online && i >= 0:
		u.entries[i] = nodeEntry{node: node, seq: seq, devices: st.Devices}
	case st.Online:
		u.entries = append(u.entries, nodeEntry{node: node, seq: seq, devices: st.Devices})
	case i >= 0:
		u.entries = slices.Delete(u.entries, i, i+1)
	}
	return v.mergeLocked(sh, st.User, u)
}

// Replace makes node's entries exactly online: the snapshot of node's
// published state taken when its change sequence was at seq. Entries of
// node set by changes newer than seq are kept (they are newer than the
// snapshot). It returns the merged Status of every user whose merged state
// changed.
func (v *View) Replace(node, seq uint64, online []Status) []Status {
	in := make(map[string]*Status, len(online))
	for i := range online {
		if online[i].Online {
			in[online[i].User] = &online[i]
		}
	}
	// Drop the entries the snapshot no longer lists (those it lists are
	// updated below; newer ones than the snapshot stay).
	changed := v.dropEntries(node, time.Time{}, func(user string, e nodeEntry) bool {
		_, listed := in[user]
		return e.seq <= seq && !listed
	})
	for _, st := range in {
		if m, ok := v.Apply(node, seq, *st); ok {
			changed = append(changed, m)
		}
	}
	return changed
}

// NodeDown drops every entry of node (declared dead at lastHeard, which
// becomes the last-seen time of the users it takes offline) and returns the
// merged Status of every user whose merged state changed.
func (v *View) NodeDown(node uint64, lastHeard time.Time) []Status {
	return v.dropEntries(node, lastHeard, func(string, nodeEntry) bool { return true })
}

// dropEntries removes node's entries for which drop says so, raising the
// users' last-seen to lastSeen (if later), and returns the merged Status of
// every user whose merged state changed.
func (v *View) dropEntries(node uint64, lastSeen time.Time, drop func(user string, e nodeEntry) bool) []Status {
	var changed []Status
	for si := range v.shards {
		sh := &v.shards[si]
		sh.mu.Lock()
		for user, u := range sh.users {
			i := u.find(node)
			if i < 0 || !drop(user, u.entries[i]) {
				continue
			}
			u.entries = slices.Delete(u.entries, i, i+1)
			if lastSeen.After(u.lastSeen) {
				u.lastSeen = lastSeen
			}
			if st, ok := v.mergeLocked(sh, user, u); ok {
				changed = append(changed, st)
			}
		}
		sh.mu.Unlock()
	}
	return changed
}

// Status returns the merged presence of user.
func (v *View) Status(user string) Status {
	sh := v.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	u := sh.users[user]
	if u == nil {
		return Status{User: user}
	}
	return u.statusLocked(user)
}

// Users returns the number of users the view holds (online, or offline with
// a last-seen time still retained).
func (v *View) Users() int {
	n := 0
	for i := range v.shards {
		sh := &v.shards[i]
		sh.mu.Lock()
		n += len(sh.users)
		sh.mu.Unlock()
	}
	return n
}

// Forget drops offline users whose last-seen time is older than cutoff
// (their last-seen is then unknown, like the Tracker's Retain).
func (v *View) Forget(cutoff time.Time) {
	for i := range v.shards {
		sh := &v.shards[i]
		sh.mu.Lock()
		for user, u := range sh.users {
			if len(u.entries) == 0 && u.lastSeen.Before(cutoff) {
				delete(sh.users, user)
			}
		}
		sh.mu.Unlock()
	}
}

func (u *viewUser) find(node uint64) int {
	for i := range u.entries {
		if u.entries[i].node == node {
			return i
		}
	}
	return -1
}

// mergeLocked recomputes u's merged state and reports whether it changed
// since it was last returned; if so it bumps the epoch.
func (v *View) mergeLocked(sh *viewShard, user string, u *viewUser) (Status, bool) {
	var devices []string
	for _, e := range u.entries {
		for _, d := range e.devices {
			if !slices.Contains(devices, d) {
				devices = append(devices, d)
			}
		}
	}
	slices.Sort(devices)
	if slices.Equal(devices, u.devices) {
		return u.statusLocked(user), false
	}
	u.devices = devices
	u.epoch = nextEpoch(u.epoch, v.now())
	if len(devices) == 0 && u.lastSeen.IsZero() {
		delete(sh.users, user) // never seen offline: nothing to remember
		return Status{User: user, Epoch: u.epoch}, true
	}
	return u.statusLocked(user), true
}

func (u *viewUser) statusLocked(user string) Status {
	st := Status{User: user, Online: len(u.devices) > 0, Epoch: u.epoch}
	if st.Online {
		st.Devices = u.devices
	} else {
		st.LastSeen = u.lastSeen
	}
	return st
}
