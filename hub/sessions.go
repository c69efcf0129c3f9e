package hub

import (
	"hash/maphash"
	"sync"
)

const sessionShards = 64

// sessionMap holds the local sessions by user, sharded so that connects
// and deliveries of different users do not contend on one lock.
type sessionMap struct {
	seed   maphash.Seed
	shards [sessionShards]sessionShard
}

type sessionShard struct {
	mu sync.RWMutex
	// byUser maps a user to its local sessions. A user has few devices,
	// so a small slice beats a map. Guarded by mu; slices are replaced,
	// never modified in place, so readers may keep one after unlocking.
	byUser map[string][]Session
}

func (m *sessionMap) init() {
	m.seed = maphash.MakeSeed()
	for i := range m.shards {
		m.shards[i].byUser = make(map[string][]Session)
	}
}

func (m *sessionMap) shard(user string) *sessionShard {
	return &m.shards[maphash.String(m.seed, user)%sessionShards]
}

func (m *sessionMap) add(s Session) {
	sh := m.shard(s.User())
	sh.mu.Lock()
	old := sh.byUser[s.User()]
	next := make([]Session, len(old), len(old)+1)
	copy(next, old)
	sh.byUser[s.User()] = append(next, s)
	sh.mu.Unlock()
}

func (m *sessionMap) remove(s Session) bool {
	sh := m.shard(s.User())
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old := sh.byUser[s.User()]
	for i, x := range old {
		if x.ID() != s.ID() {
			continue
		}
		if len(old) == 1 {
			delete(sh.byUser, s.User())
			return true
		}
		next := make([]Session, 0, len(old)-1)
		next = append(next, old[:i]...)
		sh.byUser[s.User()] = append(next, old[i+1:]...)
		return true
	}
	return false
}

// get returns the user's sessions; the slice must not be modified.
func (m *sessionMap) get(user string) []Session {
	sh := m.shard(user)
	sh.mu.RLock()
	ss := sh.byUser[user]
	sh.mu.RUnlock()
	return ss
}

func (m *sessionMap) count(user string) int { return len(m.get(user)) }

// each calls fn for every session; used by drain.
func (m *sessionMap) each(fn func(Session)) {
	for i := range m.shards {
		sh := &m.shards[i]
		sh.mu.RLock()
		var all []Session
		for _, ss := range sh.byUser {
			all = append(all, ss...)
		}
		sh.mu.RUnlock()
		for _, s := range all {
			fn(s)
		}
	}
}
