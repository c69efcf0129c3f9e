package presence

import (
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"sync"
)

// Watcher receives the presence changes of the users it watches. Sessions
// implement it by enqueueing a frame.
//
// PresenceChanged must not block, must not call Notify, and must treat st as
// read-only (its Devices slice is shared with every other watcher). It may
// call Watch, Unwatch and UnwatchAll. The dynamic type of a Watcher must be
// comparable (typically a pointer); Watchers uses it as a map key.
type Watcher interface {
	PresenceChanged(st Status)
}

// DefaultMaxPerWatcher is the watch limit of a Watchers created with 0.
const DefaultMaxPerWatcher = 1000

// ErrWatchLimit is returned (wrapped) by Watch when the watcher would watch
// more users than the limit.
var ErrWatchLimit = errors.New("presence: watch limit exceeded")

// idxMin is the list length from which a watched user keeps an index of its
// watchers for O(1) removal; the index is dropped below idxMin/2.
const idxMin = 32

// Watchers records which watchers watch which users and fans presence
// changes out to them. All methods may be called from any goroutine.
//
// Each watcher's own set of watched users is kept (sorted, 16 bytes per
// user) so that the limit, idempotency and UnwatchAll need no help from the
// caller; a watcher that watches nothing has no entry anywhere.
//
// Lock order: watched.notifyMu, then watcherShard.mu, then watchedShard.mu.
type Watchers struct {
	max  int          // static after NewWatchers
	seed maphash.Seed // static after NewWatchers

	users    [numShards]watchedShard // by watched user
	watchers [numShards]watcherShard // by watcher
}

// watchedShard maps watched users to their watchers.
type watchedShard struct {
	mu sync.Mutex
	m  map[string]*watched // guarded by mu; entries have at least one watcher
	_  [64]byte
}

// watched is the watcher set of one user.
type watched struct {
	user string // static; the canonical copy shared by the watchers' sets

	// notifyMu serialises Notify for this user, so that watchers see its
	// epochs in increasing order. Held while calling watchers.
	notifyMu sync.Mutex
	epoch    uint64 // guarded by notifyMu; last epoch delivered

	// list is copy-on-write once handed to a Notify: while shared is set,
	// elements below len(list) are never written (appending is fine, the
	// snapshot does not see beyond its length); a removal copies first.
	list   []Watcher       // guarded by the shard's mu
	shared bool            // guarded by the shard's mu
	idx    map[Watcher]int // guarded by the shard's mu; position in list, nil if len(list) < idxMin
}

// watcherShard maps watchers to the sorted users they watch.
type watcherShard struct {
	mu sync.Mutex
	m  map[Watcher][]string // guarded by mu; no empty sets
	_  [64]byte
}

// NewWatchers returns an empty Watchers that lets each watcher watch at most
// maxPerWatcher users; maxPerWatcher <= 0 means DefaultMaxPerWatcher.
func NewWatchers(maxPerWatcher int) *Watchers {
	if maxPerWatcher <= 0 {
		maxPerWatcher = DefaultMaxPerWatcher
	}
	ws := &Watchers{max: maxPerWatcher, seed: maphash.MakeSeed()}
	for i := range ws.users {
		ws.users[i].m = make(map[string]*watched)
		ws.watchers[i].m = make(map[Watcher][]string)
	}
	return ws
}

func (ws *Watchers) userShard(user string) *watchedShard {
	return &ws.users[maphash.String(ws.seed, user)&(numShards-1)]
}

func (ws *Watchers) watcherShard(w Watcher) *watcherShard {
	return &ws.watchers[maphash.Comparable(ws.seed, w)&(numShards-1)]
}

// Watch makes w watch users and returns how many were not watched by w
// before. Watching a user twice is a no-op. If w would watch more users than
// the limit, Watch adds none of them and returns an error wrapping
// ErrWatchLimit.
func (ws *Watchers) Watch(w Watcher, users []string) (added int, err error) {
	if len(users) == 0 {
		return 0, nil
	}
	wsh := ws.watcherShard(w)
	wsh.mu.Lock()
	defer wsh.mu.Unlock()
	have := wsh.m[w]
	var add []string
	for _, u := range users {
		if _, ok := slices.BinarySearch(have, u); !ok {
			add = append(add, u)
		}
	}
	if len(add) == 0 {
		return 0, nil
	}
	slices.Sort(add)
	add = slices.Compact(add)
	if len(have)+len(add) > ws.max {
		return 0, fmt.Errorf("%w: watching %d, adding %d, limit %d", ErrWatchLimit, len(have), len(add), ws.max)
	}
	for i, u := range add {
		add[i] = ws.addLocked(u, w)
	}
	wsh.m[w] = mergeSorted(have, add)
	return len(add), nil
}

// Unwatch makes w stop watching users and returns how many it watched.
func (ws *Watchers) Unwatch(w Watcher, users []string) (removed int) {
	if len(users) == 0 {
		return 0
	}
	wsh := ws.watcherShard(w)
	wsh.mu.Lock()
	defer wsh.mu.Unlock()
	have := wsh.m[w]
	if len(have) == 0 {
		return 0
	}
	rm := slices.Clone(users)
	slices.Sort(rm)
	rm = slices.Compact(rm)
	keep := have[:0]
	j := 0
	for _, h := range have {
		for j < len(rm) && rm[j] < h {
			j++
		}
		if j < len(rm) && rm[j] == h {
			ws.removeLocked(h, w)
			removed++
			continue
		}
		keep = append(keep, h)
	}
	clear(have[len(keep):])
	switch {
	case len(keep) == 0:
		delete(wsh.m, w)
	case cap(keep) > 64 && len(keep) < cap(keep)/4:
		wsh.m[w] = slices.Clone(keep)
	default:
		wsh.m[w] = keep
	}
	return removed
}

// UnwatchAll makes w stop watching every user and returns how many it
// watched. Watchers references every watcher that watches something, so
// sessions must call it when they close.
func (ws *Watchers) UnwatchAll(w Watcher) (removed int) {
	wsh := ws.watcherShard(w)
	wsh.mu.Lock()
	defer wsh.mu.Unlock()
	have := wsh.m[w]
	delete(wsh.m, w)
	for _, u := range have {
		ws.removeLocked(u, w)
	}
	return len(have)
}

// Notify calls PresenceChanged(st) on every watcher of st.User and returns
// how many it called. It drops st, returning 0, unless st.Epoch is newer than
// the last epoch notified for the user; epochs are remembered only while the
// user has watchers. Notify calls for one user are serialised; no map lock is
// held while watchers are called. A watcher added or removed during a Notify
// may or may not be called.
func (ws *Watchers) Notify(st Status) int {
	sh := ws.userShard(st.User)
	sh.mu.Lock()
	e := sh.m[st.User]
	if e == nil {
		sh.mu.Unlock()
		return 0
	}
	list := e.list
	e.shared = true
	sh.mu.Unlock()

	e.notifyMu.Lock()
	defer e.notifyMu.Unlock()
	if st.Epoch <= e.epoch {
		return 0
	}
	e.epoch = st.Epoch
	for _, w := range list {
		w.PresenceChanged(st)
	}
	return len(list)
}

// Count returns the number of watchers of user.
func (ws *Watchers) Count(user string) int {
	sh := ws.userShard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[user]; e != nil {
		return len(e.list)
	}
	return 0
}

// addLocked adds w, which does not watch user yet, to user's watchers and
// returns the canonical copy of user. The caller holds w's watcherShard.mu.
func (ws *Watchers) addLocked(user string, w Watcher) string {
	sh := ws.userShard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[user]
	if e == nil {
		e = &watched{user: strings.Clone(user)}
		sh.m[e.user] = e
	}
	e.list = append(e.list, w)
	switch {
	case e.idx != nil:
		e.idx[w] = len(e.list) - 1
	case len(e.list) >= idxMin:
		e.idx = make(map[Watcher]int, len(e.list))
		for i, x := range e.list {
			e.idx[x] = i
		}
	}
	return e.user
}

// removeLocked removes w, which watches user, from user's watchers. The
// caller holds w's watcherShard.mu.
func (ws *Watchers) removeLocked(user string, w Watcher) {
	sh := ws.userShard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[user]
	if e == nil {
		return
	}
	i := -1
	if e.idx != nil {
		if j, ok := e.idx[w]; ok {
			i = j
		}
	} else {
		i = slices.Index(e.list, w)
	}
	if i < 0 {
		return
	}
	n := len(e.list) - 1
	if n == 0 {
		delete(sh.m, user)
		return
	}
	if e.shared || (cap(e.list) > 64 && n < cap(e.list)/4) {
		e.list = slices.Clone(e.list) // a Notify may be reading the old array
		e.shared = false
	}
	last := e.list[n]
	e.list[i] = last
	e.list[n] = nil
	e.list = e.list[:n]
	if e.idx != nil {
		delete(e.idx, w)
		if i < n {
			e.idx[last] = i
		}
		if n < idxMin/2 {
			e.idx = nil
		}
	}
}

// mergeSorted returns the sorted union of the disjoint sorted slices a and b
// in a new slice.
func mergeSorted(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if a[0] < b[0] {
			out = append(out, a[0])
			a = a[1:]
		} else {
			out = append(out, b[0])
			b = b[1:]
		}
	}
	out = append(out, a...)
	return append(out, b...)
}
