package gateway

import (
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// bucket is a token bucket. Not safe for concurrent use: each owner guards
// it (the read loop owns a connection's bucket; a shard mutex guards users').
type bucket struct {
	tokens float64
	last   int64 // unix ns of the last refill
}

// take removes one token if it can; otherwise it returns how long until one
// is available.
func (b *bucket) take(now time.Time, rate, burst float64) (ok bool, wait time.Duration) {
	ns := now.UnixNano()
	if b.last == 0 {
		b.tokens, b.last = burst, ns
	}
	if el := ns - b.last; el > 0 {
		b.tokens = math.Min(burst, b.tokens+float64(el)/1e9*rate)
		b.last = ns
	}
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) / rate * 1e9)
}

const limiterShards = 32

// keyedLimits holds per-key state (a token bucket plus a connection count)
// for users and client IPs, sharded. Entries without connections are swept
// when idle, so memory follows active keys.
type keyedLimits struct {
	seed   maphash.Seed
	rate   float64
	burst  float64
	shards [limiterShards]struct {
		mu sync.Mutex
		m  map[string]*keyState // guarded by mu
	}
}

type keyState struct {
	b     bucket
	conns int
}

func newKeyedLimits(rate, burst float64) *keyedLimits {
	l := &keyedLimits{seed: maphash.MakeSeed(), rate: rate, burst: burst}
	for i := range l.shards {
		l.shards[i].m = make(map[string]*keyState)
	}
	return l
}

func (l *keyedLimits) shard(k string) int { return int(maphash.String(l.seed, k) % limiterShards) }

// with runs fn on key's state (created if missing) under its shard lock.
func (l *keyedLimits) with(key string, fn func(*keyState)) {
	sh := &l.shards[l.shard(key)]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	st := sh.m[key]
	if st == nil {
		st = &keyState{}
		sh.m[key] = st
	}
	fn(st)
}

// take takes a token for key.
func (l *keyedLimits) take(key string, now time.Time) (ok bool, wait time.Duration) {
	l.with(key, func(st *keyState) { ok, wait = st.b.take(now, l.rate, l.burst) })
	return ok, wait
}

// acquire counts a connection of key unless it has max already.
func (l *keyedLimits) acquire(key string, max int) (ok bool) {
	l.with(key, func(st *keyState) {
		if st.conns < max {
			st.conns++
			ok = true
		}
	})
	return ok
}

func (l *keyedLimits) release(key string) {
	sh := &l.shards[l.shard(key)]
	sh.mu.Lock()
	if st := sh.m[key]; st != nil && st.conns > 0 {
		st.conns--
	}
	sh.mu.Unlock()
}

// sweep forgets keys without connections whose bucket is full again.
func (l *keyedLimits) sweep(now time.Time) {
	full := time.Duration(l.burst / l.rate * 1e9)
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		for k, st := range sh.m {
			if st.conns == 0 && now.Sub(time.Unix(0, st.b.last)) > full {
				delete(sh.m, k)
			}
		}
		sh.mu.Unlock()
	}
}
