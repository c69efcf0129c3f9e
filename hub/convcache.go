package hub

import (
	"context"
	"errors"
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/parley-im/parley/storage"
)

// convState is the hub's in-memory view of one conversation: its member set
// and the last sequence number this node knows of. Several nodes may assign
// seqs of one conversation: the store refuses a seq that another node
// claimed first (storage.ErrConflict) and Send retries after the stored
// end, and every node raises lastSeq when another node's message arrives
// over the bus. Where a stale lastSeq would hide messages (resume, with a
// shared store) it is refreshed from the store (Hub.lastSeq).
type convState struct {
	id string

	// mu serializes sends (sequence assignment, the durable append and the
	// publish, so that messages leave in seq order) and membership changes.
	mu      sync.Mutex
	loaded  bool                 // guarded by mu
	evicted bool                 // guarded by mu; a new state replaces this one
	conv    storage.Conversation // guarded by mu
	lastSeq atomic.Uint64        // only raised (raiseLastSeq); read anywhere

	// members is replaced (copy-on-write) under mu and read lock-free by
	// the delivery path.
	members atomic.Pointer[memberSet]

	// routed remembers which of the conversation's recent seqs this node
	// saw go out on the bus, so that a retried send re-routes its stored
	// message only when the node that stored it may have died before
	// routing it.
	routedMu sync.Mutex
	routed   seqWindow // guarded by routedMu
}

// seqWindow is a set of the newest 64 seqs at most: seqs below the window
// are unknown.
type seqWindow struct {
	top  uint64 // highest seq added; bit i of mask is seq top-i
	mask uint64
}

func (w *seqWindow) add(seq uint64) {
	switch {
	case seq > w.top:
		shift := seq - w.top
		if shift >= 64 {
			w.mask = 0
		} else {
			w.mask <<= shift
		}
		w.mask |= 1
		w.top = seq
	case w.top-seq < 64:
		w.mask |= 1 << (w.top - seq)
	}
}

func (w *seqWindow) has(seq uint64) bool {
	return seq <= w.top && w.top-seq < 64 && w.mask&(1<<(w.top-seq)) != 0
}

func (st *convState) markRouted(seq uint64) {
	st.routedMu.Lock()
	st.routed.add(seq)
	st.routedMu.Unlock()
}

func (st *convState) wasRouted(seq uint64) bool {
	st.routedMu.Lock()
	defer st.routedMu.Unlock()
	return st.routed.has(seq)
}

// memberSet is an immutable snapshot of a conversation's members.
type memberSet struct {
	roles map[string]storage.Role
	users []string // sorted
}

func newMemberSet(ms []storage.Member) *memberSet {
	s := &memberSet{roles: make(map[string]storage.Role, len(ms)), users: make([]string, 0, len(ms))}
	for _, m := range ms {
		s.roles[m.User] = m.Role
		s.users = append(s.users, m.User)
	}
	sort.Strings(s.users)
	return s
}

func (s *memberSet) role(user string) (storage.Role, bool) {
	if s == nil {
		return "", false
	}
	r, ok := s.roles[user]
	return r, ok
}

// with returns a copy with user set to role (role "" removes the user).
func (s *memberSet) with(changes map[string]storage.Role) *memberSet {
	n := &memberSet{roles: make(map[string]storage.Role, len(s.roles)+len(changes))}
	for u, r := range s.roles {
		n.roles[u] = r
	}
	for u, r := range changes {
		if r == "" {
			delete(n.roles, u)
		} else {
			n.roles[u] = r
		}
	}
	n.users = make([]string, 0, len(n.roles))
	for u := range n.roles {
		n.users = append(n.users, u)
	}
	sort.Strings(n.users)
	return n
}

const convShards = 64

// convCache maps conversation ids to their state, bounded in size.
type convCache struct {
	seed   maphash.Seed
	max    int // per shard
	shards [convShards]struct {
		mu sync.Mutex
		m  map[string]*convState // guarded by mu
	}
}

func (c *convCache) init(max int) {
	c.seed = maphash.MakeSeed()
	c.max = max/convShards + 1
	for i := range c.shards {
		c.shards[i].m = make(map[string]*convState)
	}
}

// entry returns the state of id, creating an unloaded one if needed. When a
// shard is full it evicts idle entries (ones whose mu is free).
func (c *convCache) entry(id string) *convState {
	sh := &c.shards[maphash.String(c.seed, id)%convShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if st, ok := sh.m[id]; ok {
		return st
	}
	if len(sh.m) >= c.max {
		n := 0
		for k, st := range sh.m {
			if n >= 16 || len(sh.m) < c.max {
				break
			}
			if st.mu.TryLock() {
				st.evicted = true
				st.mu.Unlock()
				delete(sh.m, k)
				n++
			}
		}
	}
	st := &convState{id: id}
	sh.m[id] = st
	return st
}

// peek returns the state of id if cached.
func (c *convCache) peek(id string) *convState {
	sh := &c.shards[maphash.String(c.seed, id)%convShards]
	sh.mu.Lock()
	st := sh.m[id]
	sh.mu.Unlock()
	return st
}

// drop forgets id (after a failed load), if st is still its entry.
func (c *convCache) drop(id string, st *convState) {
	sh := &c.shards[maphash.String(c.seed, id)%convShards]
	sh.mu.Lock()
	if sh.m[id] == st {
		delete(sh.m, id)
	}
	sh.mu.Unlock()
}

// lock returns the loaded state of conversation id with st.mu held. The
// caller must unlock it. It returns errNotFound for unknown conversations.
func (h *Hub) lock(ctx context.Context, id string) (*convState, error) {
	for i := 0; i < 8; i++ {
		st := h.convs.entry(id)
		st.mu.Lock()
		if st.evicted {
			st.mu.Unlock()
			continue
		}
		if st.loaded {
			return st, nil
		}
		if err := h.loadLocked(ctx, st); err != nil {
			st.evicted = true
			st.mu.Unlock()
			h.convs.drop(id, st)
			return nil, err
		}
		return st, nil
	}
	return nil, errUnavailable("conversation cache contended, retry")
}

// state returns the loaded state of id without holding its lock, for
// readers of the lock-free fields (members, lastSeq).
func (h *Hub) state(ctx context.Context, id string) (*convState, error) {
	if st := h.convs.peek(id); st != nil && st.members.Load() != nil {
		return st, nil
	}
	st, err := h.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	st.mu.Unlock()
	return st, nil
}

func (h *Hub) loadLocked(ctx context.Context, st *convState) error {
	c, err := h.store.Conversation(ctx, st.id)
	if errors.Is(err, storage.ErrNotFound) {
		return errNotFound(st.id)
	}
	if err != nil {
		return h.storageErr("conversation", err)
	}
	ms, err := h.store.Members(ctx, st.id)
	if err != nil {
		return h.storageErr("members", err)
	}
	last, err := h.store.LastSeq(ctx, st.id)
	if err != nil {
		return h.storageErr("last_seq", err)
	}
	st.conv = c
	st.members.Store(newMemberSet(ms))
	st.raiseLastSeq(last)
	st.loaded = true
	return nil
}

// raiseLastSeq moves lastSeq up to seq; it never moves down.
func (st *convState) raiseLastSeq(seq uint64) {
	for {
		cur := st.lastSeq.Load()
		if seq <= cur || st.lastSeq.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// lastSeq returns the end of conversation st as far as this node may show
// it. With a store shared between nodes it asks the store, so a device that
// resumes here right after another node acked a message sees it even if
// that node's bus message is still on its way.
func (h *Hub) lastSeq(ctx context.Context, st *convState) (uint64, error) {
	if h.cfg.SharedStore {
		last, err := h.store.LastSeq(ctx, st.id)
		if err != nil {
			return 0, h.storageErr("last_seq", err)
		}
		st.raiseLastSeq(last)
	}
	return st.lastSeq.Load(), nil
}

// invalidate reloads the member set of a cached conversation (after a
// membership change made elsewhere).
func (h *Hub) invalidate(ctx context.Context, id string) {
	st := h.convs.peek(id)
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.loaded || st.evicted {
		return
	}
	if err := h.loadLocked(ctx, st); err != nil {
		// Forget it; the next use reloads.
		st.evicted = true
		h.convs.drop(id, st)
	}
}
